"""BQNet model, data and learning: pure math, no ROS.

Layering: ``bqnet_ros`` imports this package, never the other way round.
"""

__version__ = "0.1.0"

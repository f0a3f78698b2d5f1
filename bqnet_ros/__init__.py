"""ROS 2 edge of bqnet: conversions, the segmentation node and the scene player."""

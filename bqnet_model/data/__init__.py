"""Data sets: synthetic rooms for everyone, ScanNet + ScanRefer/Multi3DRefer for users who have them."""

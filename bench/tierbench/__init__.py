"""tierctl vs rclone benchmark harness (issue 8). Entry point: ``bench/run.py``."""

"""The HTML report of one protocol (html.py) and metric trajectories (trajectory.py)."""

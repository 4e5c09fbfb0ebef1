"""Online parts of the node that need no ROS: fine-tune orchestration, time-jump detection."""

"""sray_ros: Semantic-Ray semantic rendering for ROS 2 (kept trivial: rosidl replaces it at install)."""

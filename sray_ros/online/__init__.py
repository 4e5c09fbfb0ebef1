"""The node's online machinery without ROS: keyframe buffer, stamp synchroniser and shedding worker, renderer,
fine-tuning (job and runner), time-jump detection. Plain Python, driven directly by tests; ``sray_ros.ros``
wires it to topics, services and actions."""

"""The node executable serves RenderSemanticView to another process over DDS."""

from __future__ import annotations

import pytest

from conftest import REPO, call_service, installed_executable, wait_for_service

pytestmark = pytest.mark.ros


def test_render_service_fails_honestly_without_keyframes(processes, rclpy_context):
    import rclpy
    from sray_ros.srv import RenderSemanticView

    node_proc = processes.start(
        installed_executable("sray_node")
        + ["--ros-args", "--params-file", str(REPO / "config" / "sray.yaml")],
        name="sray_node",
    )
    client_node = rclpy.create_node("render_client", context=rclpy_context)
    try:
        client = client_node.create_client(RenderSemanticView, "/sray_node/render_semantic_view")
        wait_for_service(client_node, client)
        request = RenderSemanticView.Request()
        request.target_pose.header.frame_id = "map"
        request.target_pose.pose.orientation.w = 1.0
        response = call_service(client_node, client, request)
    finally:
        client_node.destroy_node()
    assert node_proc.poll() is None, processes.log(node_proc)
    assert response.success is False
    assert "empty" in response.message
    # No fake images on failure.
    assert response.labels.height == 0 and len(response.labels.data) == 0
    assert list(response.source_keyframe_ids) == []
    assert processes.stop(node_proc) in (0, -2), processes.log(node_proc)

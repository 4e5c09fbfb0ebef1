"""The sray_ros node: thin ROS wiring over plain Python objects (DESIGN.md section 4).

This first version serves the interfaces with honest failures: it holds no keyframes and no model yet,
so ``~/render_semantic_view`` answers ``success=false`` with the reason instead of images.
"""

from __future__ import annotations

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rcl_interfaces.msg import ParameterDescriptor

from sray_ros.srv import RenderSemanticView


class SrayNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sray_node", **kwargs)
        self.declare_parameter(
            "world_frame", "map",
            ParameterDescriptor(description="Fixed frame keyframe poses and renders are expressed in.",
                                read_only=True))
        self.declare_parameter(
            "num_source_views", 8,
            ParameterDescriptor(description="Source keyframes per render when a request asks for 0."))
        self._render_group = MutuallyExclusiveCallbackGroup()
        self.create_service(RenderSemanticView, "~/render_semantic_view", self._on_render,
                            callback_group=self._render_group)

    def _on_render(self, request: RenderSemanticView.Request, response: RenderSemanticView.Response):
        response.success = False
        response.message = ("keyframe buffer is empty: no keyframes have been received, "
                            "so there is nothing to render from")
        return response


def main(args=None) -> None:
    rclpy.init(args=args)
    node = SrayNode()
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()

"""S-Ray model core (pure PyTorch; never imports rclpy)."""

from sray_ros.model.config import ATTENTION_VARIANTS, SRayConfig
from sray_ros.model.feature_net import ResUNet, SourceViews
from sray_ros.model.render import (RayRenderResult, RenderOutput, ViewRender, near_far_from_sources, render_rays,
                                   render_view, volume_render)
from sray_ros.model.sray import ContextualSpace, FieldOutput, SRay, SRayField, contextual_space

__all__ = [
    "ATTENTION_VARIANTS", "SRayConfig", "ResUNet", "SourceViews", "RayRenderResult", "RenderOutput", "ViewRender",
    "near_far_from_sources", "render_rays", "render_view", "volume_render", "ContextualSpace", "FieldOutput", "SRay",
    "SRayField", "contextual_space",
]

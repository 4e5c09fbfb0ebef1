"""Minimal stand-ins for the parts of `launch` / `launch_ros` our launch files use.

`launch` and `launch_ros` have no wheels for machines without a ROS distro, so tests load the launch
files against these: they record what the launch description would start, and evaluate
LaunchConfiguration substitutions from a context of argument values.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types


class LaunchContext:
    def __init__(self, configurations: dict[str, str], share_directory: str | None = None) -> None:
        self.launch_configurations = dict(configurations)
        self.share_directory = share_directory  # what get_package_share_directory("sray_ros") answers


class LaunchConfiguration:
    def __init__(self, name: str, default=None) -> None:
        self.name, self.default = name, default

    def perform(self, context: LaunchContext) -> str:
        if self.name in context.launch_configurations:
            return context.launch_configurations[self.name]
        if self.default is None:
            raise KeyError(f"launch configuration '{self.name}' is not set")
        return self.default


class _Recorded:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class DeclareLaunchArgument(_Recorded):
    @property
    def name(self) -> str:
        return self.args[0]

    @property
    def default_value(self):
        return self.kwargs.get("default_value")


class OpaqueFunction(_Recorded):
    def execute(self, context: LaunchContext):
        return self.kwargs["function"](context, *self.kwargs.get("args", []), **self.kwargs.get("kwargs", {}))


class ExecuteProcess(_Recorded):
    pass


class Node(_Recorded):
    pass


class PythonLaunchDescriptionSource(_Recorded):
    @property
    def path(self) -> str:
        return str(self.args[0] if self.args else self.kwargs["launch_file_path"])


class IncludeLaunchDescription(_Recorded):
    """Resolved like launch does: the included file sees the includer's configurations, overridden by
    ``launch_arguments`` (evaluated in the includer's context)."""

    @property
    def source(self) -> PythonLaunchDescriptionSource:
        return self.args[0] if self.args else self.kwargs["launch_description_source"]

    def launch_arguments(self, context: LaunchContext) -> dict[str, str]:
        arguments = {}
        for name, value in self.kwargs.get("launch_arguments", ()):
            arguments[name] = value.perform(context) if hasattr(value, "perform") else str(value)
        return arguments

    def resolve(self, context: LaunchContext) -> list:
        included = load_launch_file(self.source.path, context.share_directory)
        return included.resolve({**context.launch_configurations, **self.launch_arguments(context)})


class LaunchDescription:
    def __init__(self, entities=None) -> None:
        self.entities = list(entities or [])
        self.share_directory: str | None = None  # set by load_launch_file

    def resolve(self, arguments: dict[str, str]) -> list:
        """Evaluate the description as `ros2 launch ... name:=value` would: actions it starts."""
        # Like `ros2 launch`, every name:=value becomes a launch configuration (included files see them too).
        context = LaunchContext(arguments, self.share_directory)
        started = []
        for entity in self.entities:
            if isinstance(entity, DeclareLaunchArgument):
                value = arguments.get(entity.name, entity.default_value)
                if value is None:
                    raise KeyError(f"launch argument '{entity.name}' has no value and no default")
                context.launch_configurations[entity.name] = value
        pending = [entity for entity in self.entities if not isinstance(entity, DeclareLaunchArgument)]
        while pending:
            entity = pending.pop(0)
            if isinstance(entity, OpaqueFunction):
                pending[:0] = list(entity.execute(context) or [])
            elif isinstance(entity, IncludeLaunchDescription):
                started.append(entity)  # recorded too, so tests can check what was passed to it
                started.extend(entity.resolve(context))
            else:
                started.append(entity)
        return started


@contextlib.contextmanager
def standin_modules(share_directory: str):
    """Install the stand-ins (and an ament index answering `share_directory`) into sys.modules."""
    modules = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch.launch_description_sources": types.ModuleType("launch.launch_description_sources"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
        "ament_index_python": types.ModuleType("ament_index_python"),
        "ament_index_python.packages": types.ModuleType("ament_index_python.packages"),
    }
    modules["launch"].LaunchDescription = LaunchDescription
    modules["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    modules["launch.actions"].OpaqueFunction = OpaqueFunction
    modules["launch.actions"].ExecuteProcess = ExecuteProcess
    modules["launch.actions"].IncludeLaunchDescription = IncludeLaunchDescription
    modules["launch.launch_description_sources"].PythonLaunchDescriptionSource = PythonLaunchDescriptionSource
    modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    modules["launch_ros.actions"].Node = Node
    modules["ament_index_python.packages"].get_package_share_directory = (
        lambda package: share_directory if package == "sray_ros" else (_ for _ in ()).throw(KeyError(package))
    )
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_launch_file(path, share_directory: str) -> LaunchDescription:
    with standin_modules(share_directory):
        spec = importlib.util.spec_from_file_location(f"launch_file_{abs(hash(str(path)))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
    description.share_directory = share_directory
    return description

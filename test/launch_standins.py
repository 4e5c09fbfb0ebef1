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
    def __init__(self, configurations: dict[str, str]) -> None:
        self.launch_configurations = dict(configurations)


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


class LaunchDescription:
    def __init__(self, entities=None) -> None:
        self.entities = list(entities or [])

    def resolve(self, arguments: dict[str, str]) -> list:
        """Evaluate the description as `ros2 launch ... name:=value` would: actions it starts."""
        context = LaunchContext({})
        started = []
        for entity in self.entities:
            if isinstance(entity, DeclareLaunchArgument):
                value = arguments.get(entity.name, entity.default_value)
                if value is None:
                    raise KeyError(f"launch argument '{entity.name}' has no value and no default")
                context.launch_configurations[entity.name] = value
        for entity in self.entities:
            if isinstance(entity, OpaqueFunction):
                started.extend(entity.execute(context) or [])
            elif not isinstance(entity, DeclareLaunchArgument):
                started.append(entity)
        return started


@contextlib.contextmanager
def standin_modules(share_directory: str):
    """Install the stand-ins (and an ament index answering `share_directory`) into sys.modules."""
    modules = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
        "ament_index_python": types.ModuleType("ament_index_python"),
        "ament_index_python.packages": types.ModuleType("ament_index_python.packages"),
    }
    modules["launch"].LaunchDescription = LaunchDescription
    modules["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    modules["launch.actions"].OpaqueFunction = OpaqueFunction
    modules["launch.actions"].ExecuteProcess = ExecuteProcess
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
        return module.generate_launch_description()

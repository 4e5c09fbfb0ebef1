"""pip install of the pure-Python core of sray_ros (model, data, training, CLIs) for machines without
ROS, e.g. training servers: `pip install .` (torch: install the build that fits your machine first).

On a ROS machine, colcon builds the package through CMakeLists.txt instead (interfaces + Python).
"""

from setuptools import find_packages, setup

# Command -> "module:function". scripts/setup.sh puts the same commands on the PATH of its environment.
CONSOLE_SCRIPTS = {
    "sray-node": "sray_ros.ros.node:main",
    "sray-demo": "sray_ros.demo:main",
    "sray-train": "sray_ros.train.train_cli:main",
    "sray-eval": "sray_ros.train.evaluate:main",
    "sray-finetune": "sray_ros.train.finetune:main",
    "sray-generate-rooms": "sray_ros.data.synth.generate:main",
    "sray-resize-dataset": "sray_ros.data.resize:main",
    "sray-check-dataset": "sray_ros.data.checks:main",
    "sray-scannet-to-bag": "sray_ros.ros.scannet_to_bag:main",
    "sray-play-bag": "sray_ros.ros.bag_player:main",
}

if __name__ == "__main__":
    setup(
        name="sray_ros",
        version="0.1.0",
        description="Semantic-Ray (S-Ray) generalizable semantic radiance field for ROS 2 robots",
        license="Apache-2.0",
        python_requires=">=3.10",
        packages=find_packages(include=["sray_ros", "sray_ros.*"]),
        install_requires=["torch>=2.1", "numpy", "opencv-python-headless", "PyYAML", "tqdm", "rosbags"],
        extras_require={"test": ["pytest", "pytest-xdist", "pytest-timeout"]},
        entry_points={"console_scripts": [f"{name} = {target}" for name, target in CONSOLE_SCRIPTS.items()]},
    )

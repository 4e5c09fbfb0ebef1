#!/usr/bin/env bash
# The test suite through `colcon test` (ament_cmake_pytest, CMakeLists.txt's BUILD_TESTING section), as a ROS
# developer runs it, after the same set-up as scripts/test.sh. Pytest options go in PYTEST_ADDOPTS.
#   bash scripts/colcon_test.sh                                        # the whole suite, Kilted wheels
#   SRAY_ROS_DISTRO=jazzy PYTEST_ADDOPTS='-m "ros or not slow"' bash scripts/colcon_test.sh
# Exit status: colcon test-result's (non-zero when a test failed or no result was written).
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/test_env.sh"
export PYTEST_ADDOPTS="-n ${SRAY_TEST_WORKERS:-2} --dist loadfile ${PYTEST_ADDOPTS:-}"
cd "$SRAY_WS"
rm -rf build/sray_ros/test_results
colcon test --base-paths "$ROOT" --packages-select sray_ros --event-handlers console_direct+
colcon test-result --test-result-base build/sray_ros --verbose

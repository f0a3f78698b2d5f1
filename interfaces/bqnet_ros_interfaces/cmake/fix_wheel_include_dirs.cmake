# ROS 2 message packages installed as PyPI wheels (ros-*-msgs) export CMake targets whose
# include directories name the machine that built the wheels:
#   /opt/python/cp3XX-cp3XX/include/python3.XX
#   /opt/python/cp3XX-cp3XX/lib/python3.XX/site-packages/numpy/_core/include
# CMake refuses to generate when an imported target names a folder that does not exist. This
# rewrites those two paths on every imported target of this directory to the running Python's
# include folder and numpy's, so that no root-owned symlinks are needed. A normal ROS 2 install
# has no such paths: then nothing matches and nothing changes.
function(bqnet_fix_wheel_include_dirs python_executable)
  if(CMAKE_VERSION VERSION_LESS 3.21)
    return()  # no IMPORTED_TARGETS property; normal ROS installs do not need this anyway
  endif()
  execute_process(
    COMMAND "${python_executable}" -c
      "import sysconfig, numpy; print(sysconfig.get_paths()['include'] + ';' + numpy.get_include())"
    OUTPUT_VARIABLE _paths OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(WARNING "bqnet_fix_wheel_include_dirs: could not ask ${python_executable} for its include folders")
    return()
  endif()
  list(GET _paths 0 _py_include)
  list(GET _paths 1 _np_include)
  get_directory_property(_targets IMPORTED_TARGETS)
  set(_fixed 0)
  foreach(_t IN LISTS _targets)
    get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs OR NOT _dirs MATCHES "/opt/python/")
      continue()
    endif()
    set(_new "")
    foreach(_d IN LISTS _dirs)
      if(_d MATCHES "^/opt/python/[^/]+/include/python3" AND NOT EXISTS "${_d}")
        set(_d "${_py_include}")
      elseif(_d MATCHES "^/opt/python/.*/numpy/_core/include$" AND NOT EXISTS "${_d}")
        set(_d "${_np_include}")
      endif()
      list(APPEND _new "${_d}")
    endforeach()
    list(REMOVE_DUPLICATES _new)
    set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new}")
    math(EXPR _fixed "${_fixed} + 1")
  endforeach()
  if(_fixed GREATER 0)
    message(STATUS "bqnet_ros_interfaces: pointed ${_fixed} wheel-built targets at ${_py_include} and ${_np_include}")
  endif()
endfunction()

# The dashboard's static files (master/dashboard/*.html|css|js), embedded in
# taskq-master at build time: embed_files.cmake turns them into a generated
# dashboard_assets.cc (byte arrays and a table, master/dashboard_assets.h),
# rebuilt when a file changes. No xxd, no JS toolchain: CMake alone.
file(GLOB taskq_dashboard_files CONFIGURE_DEPENDS
  ${CMAKE_SOURCE_DIR}/master/dashboard/*.html
  ${CMAKE_SOURCE_DIR}/master/dashboard/*.css
  ${CMAKE_SOURCE_DIR}/master/dashboard/*.js
  ${CMAKE_SOURCE_DIR}/master/dashboard/*.svg)
set(taskq_dashboard_files_cc ${CMAKE_BINARY_DIR}/gen/dashboard_files.cc)
add_custom_command(
  OUTPUT ${taskq_dashboard_files_cc}
  COMMAND ${CMAKE_COMMAND} -DOUT=${taskq_dashboard_files_cc} "-DFILES=${taskq_dashboard_files}"
          -P ${CMAKE_SOURCE_DIR}/master/dashboard/embed_files.cmake
  DEPENDS ${taskq_dashboard_files} ${CMAKE_SOURCE_DIR}/master/dashboard/embed_files.cmake
  COMMENT "Embedding the dashboard's static files"
  VERBATIM)
target_sources(taskq_master_lib PRIVATE ${taskq_dashboard_files_cc})

# Installation and the Debian package (`make deb`: CPack's DEB generator): the binary and the
# small supervisor, the dashboard's files, example fleets, systemd units for the server and the
# agent with their configuration in /etc/gpupool, a man page generated from the CLI's help,
# and bash completion.
include(GNUInstallDirs)
find_program(HELP2MAN help2man REQUIRED)

set(GP_MAN ${CMAKE_BINARY_DIR}/packaging/gpupool.1)
add_custom_command(
  OUTPUT ${GP_MAN}.gz
  COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/packaging
  COMMAND ${CMAKE_SOURCE_DIR}/packaging/man.sh $<TARGET_FILE:gpupool> ${GP_MAN}
  COMMAND gzip -9nf ${GP_MAN}
  DEPENDS gpupool ${CMAKE_SOURCE_DIR}/packaging/man.sh
  COMMENT "The man page, from the CLI's help")
add_custom_target(man ALL DEPENDS ${GP_MAN}.gz)

install(TARGETS gpupool gpupool-supervise RUNTIME DESTINATION bin)
install(FILES ${GP_MAN}.gz DESTINATION share/man/man1)
install(FILES packaging/bash-completion/gpupool DESTINATION share/bash-completion/completions)
install(FILES packaging/systemd/gpupool-server.service packaging/systemd/gpupool-agent.service DESTINATION lib/systemd/system)
install(FILES packaging/etc/server.conf packaging/etc/server.env packaging/etc/agent.env DESTINATION /etc/gpupool)
install(DIRECTORY web/dist/ DESTINATION share/gpupool/web OPTIONAL)
install(DIRECTORY examples/fleets/ DESTINATION share/gpupool/fleets)
install(FILES README.md DESTINATION share/doc/gpupool)
install(DIRECTORY docs/ DESTINATION share/doc/gpupool/docs)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME gpupool)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "gpupool maintainers <gpupool@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "pool GPUs from many sources into one fleet and schedule work on it")
set(CPACK_PACKAGE_DESCRIPTION "A server, node agents and a simulator sharing one scheduler: it places jobs on the best GPUs of a fleet from many providers, watches health, moves work off failing nodes, and streams what happens to Kafka.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "runc, etcd-server")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "prometheus, umoci")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_SOURCE_DIR}/packaging/conffiles)
include(CPack)

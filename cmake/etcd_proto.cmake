# etcd's v3 API (issue 18: masters coordinate through etcd; docs/CLUSTER.md),
# generated from the .proto files Debian ships in golang-etcd-server-dev,
# with the protos they import (gogoproto, google.api annotations) from the
# packages that package depends on. Nothing is vendored: the build reads
# them where Debian installs them.
set(GOCODE_SRC /usr/share/gocode/src)
set(ETCD_PROTO_ROOTS
  ${GOCODE_SRC}/go.etcd.io                                 # etcd/mvcc/mvccpb/kv.proto
  ${GOCODE_SRC}/github.com/gogo/protobuf                   # gogoproto/gogo.proto
  ${GOCODE_SRC}/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis)  # google/api/
set(ETCD_PROTOS
  etcd/mvcc/mvccpb/kv.proto etcd/auth/authpb/auth.proto etcd/etcdserver/etcdserverpb/rpc.proto
  gogoproto/gogo.proto google/api/annotations.proto google/api/http.proto)
set(ETCD_PROTO_OUT ${CMAKE_BINARY_DIR}/gen_etcd)
file(MAKE_DIRECTORY ${ETCD_PROTO_OUT})
set(ETCD_PROTO_ARGS)
foreach(root ${ETCD_PROTO_ROOTS})
  list(APPEND ETCD_PROTO_ARGS -I ${root})
endforeach()
set(ETCD_PROTO_FILES)
set(ETCD_PROTO_GEN)
foreach(p ${ETCD_PROTOS})
  set(found "")
  foreach(root ${ETCD_PROTO_ROOTS})
    if(EXISTS ${root}/${p})
      set(found ${root}/${p})
    endif()
  endforeach()
  if(NOT found)
    message(FATAL_ERROR "${p} not found under /usr/share/gocode/src: "
                        "apt-get install golang-etcd-server-dev (deploy/install-deps.sh)")
  endif()
  list(APPEND ETCD_PROTO_FILES ${found})
  string(REGEX REPLACE "\\.proto$" "" stem ${p})
  list(APPEND ETCD_PROTO_GEN ${ETCD_PROTO_OUT}/${stem}.pb.cc ${ETCD_PROTO_OUT}/${stem}.pb.h)
endforeach()
list(APPEND ETCD_PROTO_GEN
  ${ETCD_PROTO_OUT}/etcd/etcdserver/etcdserverpb/rpc.grpc.pb.cc
  ${ETCD_PROTO_OUT}/etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h)
add_custom_command(
  OUTPUT ${ETCD_PROTO_GEN}
  COMMAND ${PROTOC} ${ETCD_PROTO_ARGS} --cpp_out=${ETCD_PROTO_OUT} ${ETCD_PROTOS}
  COMMAND ${PROTOC} ${ETCD_PROTO_ARGS} --grpc_out=${ETCD_PROTO_OUT}
          --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN} etcd/etcdserver/etcdserverpb/rpc.proto
  DEPENDS ${ETCD_PROTO_FILES}
  COMMENT "Generating etcd's v3 API (Debian's golang-etcd-server-dev)")
add_library(taskq_etcd_proto STATIC ${ETCD_PROTO_GEN})
target_include_directories(taskq_etcd_proto SYSTEM PUBLIC ${ETCD_PROTO_OUT})
target_link_libraries(taskq_etcd_proto PUBLIC PkgConfig::GRPCPP PkgConfig::PROTOBUF)

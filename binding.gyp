{
  "variables": {
    # 1 (scripts/prebuild.sh sets UDS_IPC_PORTABLE=1): the prebuilt binaries,
    # loadable on glibc >= 2.28 (native/addon/glibc_compat.cc, static libstdc++).
    "uds_ipc_portable%": "<!(node -p \"process.env.UDS_IPC_PORTABLE === '1' ? 1 : 0\")",
    # Stamped into every build (native/addon/build_stamp.cc), checked at npm pack.
    "uds_ipc_source_hash%": "<!(node native/addon/source_hash.cjs)"
  },
  "targets": [
    {
      "target_name": "uds_ipc",
      "sources": [
        "native/addon/addon.cc",
        "native/addon/batch_export.cc",
        "native/addon/build_stamp.cc",
        "native/addon/js_receiver.cc",
        "native/addon/js_thread_poller.cc",
        "native/addon/protocol_export.cc",
        "native/addon/reader_wrap.cc",
        "native/addon/writer_wrap.cc",
        "native/core/event_loop.cc",
        "native/core/packet_io.cc",
        "native/core/socket_util.cc",
        "native/core/reader_engine.cc",
        "native/core/reply_queue.cc",
        "native/core/writer_engine.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
        "NAPI_CPP_EXCEPTIONS",
        "UDS_IPC_SOURCE_HASH=<(uds_ipc_source_hash)"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "ldflags": ["-pthread"],
      "conditions": [
        ["uds_ipc_portable==1", {
          "sources": ["native/addon/glibc_compat.cc"],
          "ldflags": [
            "-static-libstdc++",
            "-Wl,--exclude-libs,ALL",
            "-Wl,--version-script=<(module_root_dir)/native/addon/exports.map",
            "-Wl,--wrap=pow",
            "-Wl,--wrap=pthread_mutex_trylock",
            "-Wl,--wrap=pthread_cond_clockwait",
            "-Wl,--wrap=__libc_single_threaded",
            "-Wl,--wrap=arc4random",
            "-Wl,--wrap=pthread_create,--wrap=pthread_detach,--wrap=pthread_join,--wrap=pthread_once",
            "-Wl,--wrap=pthread_key_create,--wrap=__pthread_key_create,--wrap=pthread_key_delete",
            "-Wl,--wrap=pthread_getspecific,--wrap=pthread_setspecific",
            "-Wl,--wrap=stat,--wrap=stat64,--wrap=lstat,--wrap=lstat64",
            "-Wl,--wrap=fstat,--wrap=fstat64,--wrap=fstatat,--wrap=fstatat64"
          ]
        }]
      ]
    }
  ]
}

{
  "targets": [
    {
      "target_name": "uds_ipc",
      "sources": [
        "native/addon/addon.cc",
        "native/addon/batch_export.cc",
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
        "NAPI_CPP_EXCEPTIONS"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "ldflags": ["-pthread"]
    }
  ]
}

// The source hash stamped into every build of the addon (binding.gyp defines
// UDS_IPC_SOURCE_HASH from native/addon/source_hash.cjs). It is read from the
// file, not by loading it: scripts/check-prebuilds.mjs finds the marker
// "uds-ipc-source-hash:" in each prebuilds/*/*.node (any architecture) and
// refuses to pack a binary whose hash is not the one of the current sources.
#ifndef UDS_IPC_SOURCE_HASH
#define UDS_IPC_SOURCE_HASH unknown
#endif
#define UDS_IPC_STR2(x) #x
#define UDS_IPC_STR(x) UDS_IPC_STR2(x)

extern "C" __attribute__((used, visibility("hidden"))) const char uds_ipc_source_hash[] =
    "uds-ipc-source-hash:" UDS_IPC_STR(UDS_IPC_SOURCE_HASH);

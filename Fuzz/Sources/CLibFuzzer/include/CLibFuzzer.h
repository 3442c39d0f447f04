#ifndef CLIBFUZZER_H
#define CLIBFUZZER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver, as a function (libFuzzer 12 and later): parses the flags in
/// `argv` and fuzzes or replays with `callback`. The fuzzers call it from their own `main`,
/// because SwiftPM renames an executable's entry point (`<Module>_main`), which leaves
/// libFuzzer's `main` out of the link.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif

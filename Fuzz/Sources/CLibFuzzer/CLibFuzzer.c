// Nothing to compile: the module exists for its header. libFuzzer itself comes from
// `-sanitize=fuzzer` at link time.
#include "CLibFuzzer.h"

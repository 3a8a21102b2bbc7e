package cache

import "runtime"

// runtimeGosched yields while a test waits for another goroutine to reach a point it can only observe
// through a counter (an upstream call), without sleeping.
func runtimeGosched() { runtime.Gosched() }

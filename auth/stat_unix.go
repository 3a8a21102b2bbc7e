//go:build unix

package auth

import (
	"io/fs"
	"syscall"
)

// fileID identifies the file behind a path: a Kubernetes secret update
// swaps a symlink to a new directory, and a rename replaces the file, and
// both give the path a new inode even when size and mtime look the same.
func fileID(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // types differ by platform
	}
	return 0, 0
}

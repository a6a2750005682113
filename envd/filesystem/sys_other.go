//go:build !linux

package filesystem

import (
	"errors"
	"os"
)

// ReadMetadata is Linux-only; elsewhere entries carry no metadata.
func ReadMetadata(string) map[string]string { return nil }

// WriteMetadata is Linux-only; elsewhere it fails with errors.ErrUnsupported.
func WriteMetadata(*os.File, map[string]string) error { return errors.ErrUnsupported }

// onNetworkMount is Linux-only; elsewhere every path counts as local.
func onNetworkMount(string) (bool, error) { return false, nil }

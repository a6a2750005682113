//go:build !linux

package filesystem

// readMetadata is Linux-only; elsewhere entries carry no metadata.
func readMetadata(string) map[string]string { return nil }

// onNetworkMount is Linux-only; elsewhere every path counts as local.
func onNetworkMount(string) (bool, error) { return false, nil }

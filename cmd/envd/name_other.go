//go:build !linux

package main

func setProcessName() {}

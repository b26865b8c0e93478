// Package layers holds one test: that kfv's packages import only
// packages below them (docs/architecture.md draws the layers), and that
// the decision and derivation packages stay free of the kernel. It has no
// code of its own.
package layers

// Package packaging holds no code: its test builds the outpost .deb and
// .rpm with `make package` (the files beside this one say what goes in
// them), installs the .deb on this machine with dpkg, checks what it
// installed and purges it again. The test needs root and dpkg; elsewhere
// it is skipped.
package packaging

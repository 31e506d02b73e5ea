//go:build !unix

package deployer

import "os"

// mapFile reads the file at p; other systems have no mapping here.
func mapFile(p string) (b []byte, unmap func(), err error) {
	b, err = os.ReadFile(p)
	if err != nil {
		return nil, nil, err
	}
	return b, func() {}, nil
}

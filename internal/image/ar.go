package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Unix ar archives (the container of a .deb): a magic line, then members,
// each a 60-byte text header followed by its data padded to an even length.
const (
	arMagic      = "!<arch>\n"
	arHeaderSize = 60
	// arMaxMember bounds one member; a kernel package's data.tar is well
	// under this.
	arMaxMember = 4 << 30
)

// arHeader is one member's metadata.
type arHeader struct {
	Name string
	Size int64
}

// arReader reads members in order; Read returns the current member's data.
type arReader struct {
	r      io.Reader
	remain int64 // unread bytes of the current member
	pad    int64 // padding byte after the current member
}

func newArReader(r io.Reader) (*arReader, error) {
	var m [len(arMagic)]byte
	if _, err := io.ReadFull(r, m[:]); err != nil {
		return nil, fmt.Errorf("ar: read magic: %w", err)
	}
	if string(m[:]) != arMagic {
		return nil, errors.New("ar: not an ar archive")
	}
	return &arReader{r: r}, nil
}

// Next skips what is left of the current member and returns the next
// header; io.EOF after the last member.
func (a *arReader) Next() (*arHeader, error) {
	if _, err := io.CopyN(io.Discard, a.r, a.remain+a.pad); err != nil {
		return nil, fmt.Errorf("ar: skip member: %w", noEOF(err))
	}
	a.remain, a.pad = 0, 0
	var h [arHeaderSize]byte
	n, err := io.ReadFull(a.r, h[:])
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("ar: truncated header (%d bytes): %w", n, noEOF(err))
	}
	if h[58] != '`' || h[59] != '\n' {
		return nil, errors.New("ar: bad member header terminator")
	}
	sizeField := strings.TrimRight(string(h[48:58]), " ")
	size, err := strconv.ParseInt(sizeField, 10, 64)
	if err != nil || size < 0 || size > arMaxMember {
		return nil, fmt.Errorf("ar: bad member size %q", sizeField)
	}
	name := strings.TrimRight(string(h[0:16]), " ")
	// BSD ar keeps long names in front of the data: "#1/<len>".
	if rest, ok := strings.CutPrefix(name, "#1/"); ok {
		nlen, err := strconv.ParseInt(rest, 10, 64)
		if err != nil || nlen < 0 || nlen > size || nlen > 4096 {
			return nil, fmt.Errorf("ar: bad BSD long name length %q", rest)
		}
		nb := make([]byte, nlen)
		if _, err := io.ReadFull(a.r, nb); err != nil {
			return nil, fmt.Errorf("ar: read long name: %w", noEOF(err))
		}
		name = string(bytes.TrimRight(nb, "\x00"))
		size -= nlen
		a.pad = (size + nlen) % 2
	} else {
		a.pad = size % 2
		// GNU ar ends names with '/'; "/" and "//" are its symbol and name tables.
		if name != "/" && name != "//" {
			name = strings.TrimSuffix(name, "/")
		}
	}
	a.remain = size
	return &arHeader{Name: name, Size: size}, nil
}

// Read reads the current member's data.
func (a *arReader) Read(p []byte) (int, error) {
	if a.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > a.remain {
		p = p[:a.remain]
	}
	n, err := a.r.Read(p)
	a.remain -= int64(n)
	if err == io.EOF && a.remain > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// noEOF turns a bare EOF in the middle of a structure into ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

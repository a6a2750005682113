package files

import (
	"io"
	"sync"
	"sync/atomic"
)

// bufSize is the copy buffer: large enough that a 256 MiB transfer takes a
// few hundred system calls rather than tens of thousands.
const bufSize = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// copier moves request bodies into files with two pooled buffers, so that
// the next chunk is read from the network while the last one is written
// to disk. Serially, the two costs add up; a 256 MiB upload is about twice
// as slow. A copier belongs to one request; release returns its buffers.
type copier struct {
	bufs [2]*[]byte
}

func newCopier() *copier { return &copier{bufs: [2]*[]byte{getBuf(), getBuf()}} }

func (c *copier) release() {
	putBuf(c.bufs[0])
	putBuf(c.bufs[1])
}

// copy copies src to dst. Read and write errors come back apart: the
// first is the sender's fault, the second the disk's. A source that fits
// in one buffer is copied without a second goroutine.
func (c *copier) copy(dst io.Writer, src io.Reader) (n int64, rerr, werr error) {
	first := *c.bufs[0]
	nr, err := fill(src, first)
	if err != nil && err != io.EOF {
		return 0, err, nil
	}
	if err == io.EOF {
		if nr == 0 {
			return 0, nil, nil
		}
		m, err := writeAll(dst, first[:nr])
		return m, nil, err
	}

	// full carries filled buffers to the writer; free brings them back.
	// The writer owns a buffer from receiving it on full to sending it on
	// free. It stops writing after a failure but keeps returning buffers,
	// and it ends when full is closed, which copy does before returning.
	full := make(chan []byte, 1)
	free := make(chan []byte, 2)
	free <- *c.bufs[1]
	var failed atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range full {
			if werr == nil {
				var m int64
				m, werr = writeAll(dst, b)
				n += m
				failed.Store(werr != nil)
			}
			free <- b
		}
	}()
	full <- first[:nr]
	for {
		b := <-free
		if failed.Load() {
			break
		}
		nr, err := fill(src, b[:cap(b)])
		if nr > 0 {
			full <- b[:nr]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(full)
	<-done // n and werr are the writer's until now
	if werr != nil {
		rerr = nil // the read side stopped because of the write failure
	}
	return n, rerr, werr
}

func writeAll(dst io.Writer, b []byte) (int64, error) {
	n, err := dst.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	return int64(n), err
}

// copyFull copies src to dst through buf, filling buf before each write so
// that a source returning small reads still reaches dst in few, large
// writes. Errors come back apart as in copier.copy.
func copyFull(dst io.Writer, src io.Reader, buf []byte) (n int64, rerr, werr error) {
	for {
		nr, err := fill(src, buf)
		if nr > 0 {
			m, ew := writeAll(dst, buf[:nr])
			n += m
			if ew != nil {
				return n, nil, ew
			}
		}
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, err, nil
		}
	}
}

// fill reads into buf until it is full or src fails. io.EOF is returned as
// is, unlike io.ReadFull, whose io.ErrUnexpectedEOF would be ambiguous with
// the multipart reader's own truncation error. The multipart reader returns
// at most 4 KiB per Read; filling first keeps disk writes large.
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

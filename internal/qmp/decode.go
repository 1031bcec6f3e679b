package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// MaxLine bounds one line from the server. QMP replies we ask for are small;
// a longer line means a confused or hostile peer, not data we want.
const MaxLine = 1 << 20

// Version is the QEMU version announced in the greeting.
type Version struct {
	Major   int    `json:"major"`
	Minor   int    `json:"minor"`
	Micro   int    `json:"micro"`
	Package string `json:"package,omitempty"`
}

// AtLeast reports whether v >= major.minor.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// Greeting is the first message the server sends on a connection.
type Greeting struct {
	Version      Version  `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// Event is an asynchronous notification (STOP, SHUTDOWN, VSERPORT_CHANGE, ...).
type Event struct {
	Name string
	Data json.RawMessage
	Time time.Time
}

// Error is a command failure reported by QEMU.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s", e.Class, e.Desc) }

// kind classifies a decoded line.
type kind int

const (
	kindGreeting kind = iota + 1
	kindReply
	kindEvent
)

// message is one decoded server line. Unknown keys are ignored, as the QMP
// spec asks of clients.
type message struct {
	kind     kind
	greeting Greeting
	id       json.RawMessage // nil when the server sent none
	ret      json.RawMessage
	err      *Error
	event    Event
}

type wireTimestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

type wireQMP struct {
	Version struct {
		QEMU    *Version `json:"qemu"`
		Package string   `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

type wireMessage struct {
	QMP       *wireQMP        `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *wireTimestamp  `json:"timestamp"`
	ID        json.RawMessage `json:"id"`
}

var errEmptyLine = errors.New("empty line")

// decodeLine parses one line (without its terminator) sent by a QMP server.
func decodeLine(line []byte) (message, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return message{}, errEmptyLine
	}
	if len(line) > MaxLine {
		return message{}, fmt.Errorf("line of %d bytes exceeds %d", len(line), MaxLine)
	}
	var w wireMessage
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&w); err != nil {
		return message{}, fmt.Errorf("decode qmp line: %w", err)
	}
	if dec.More() {
		return message{}, errors.New("decode qmp line: trailing data")
	}
	switch {
	case w.QMP != nil:
		if w.QMP.Version.QEMU == nil {
			return message{}, errors.New("qmp greeting without version")
		}
		g := Greeting{Version: *w.QMP.Version.QEMU, Capabilities: w.QMP.Capabilities}
		g.Version.Package = w.QMP.Version.Package
		return message{kind: kindGreeting, greeting: g}, nil
	case w.Event != "":
		ev := Event{Name: w.Event, Data: w.Data}
		if ts := w.Timestamp; ts != nil && ts.Seconds >= 0 && ts.Microseconds >= 0 && ts.Microseconds < 1e6 {
			ev.Time = time.Unix(ts.Seconds, ts.Microseconds*1000)
		}
		return message{kind: kindEvent, event: ev}, nil
	case w.Error != nil:
		return message{kind: kindReply, id: w.ID, err: w.Error}, nil
	case w.Return != nil:
		return message{kind: kindReply, id: w.ID, ret: w.Return}, nil
	}
	return message{}, errors.New("qmp line is neither greeting, reply nor event")
}

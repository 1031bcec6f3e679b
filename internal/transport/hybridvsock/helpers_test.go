package hybridvsock

import "fmt"

func fmtSscanf(s string, port *uint32) (int, error) { return fmt.Sscanf(s, "CONNECT %d", port) }

// Tells a TLS server from a plaintext one, for the one failure gRPC does
// not explain: a plaintext client connecting to a TLS master sees only
// "Socket closed" — as it does when a master at its connection limit closes
// a new connection, which is worth retrying. The probe sends a TLS
// ClientHello and looks at the first bytes of the answer: a TLS server
// answers with a TLS record (a ServerHello, or an alert); a gRPC plaintext
// server closes the connection or answers with HTTP/2.
//
// Thread-safety: stateless functions, safe from any thread. SpeaksTls
// blocks for up to `timeout`.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace taskq {

// True if `address` (as gRPC writes it in a status message:
// "ipv4:10.0.0.1:5000", "ipv6:[::1]:5000") answers a ClientHello with a
// TLS record within `timeout`. False if it cannot be reached, closes, says
// something else, or does not answer in time.
bool SpeaksTls(absl::string_view address, absl::Duration timeout);

// The address a gRPC connect failure names ("... last error: UNAVAILABLE:
// ipv4:127.0.0.1:5000: Socket closed" gives "ipv4:127.0.0.1:5000"), or
// empty if it names none.
std::string AddressInMessage(absl::string_view message);

}  // namespace taskq

// What the IOCP backend can tell about where it runs, without the Windows
// headers (so tests of the backend can ask too).
#pragma once

namespace ionet::iocp {

// True under Wine, whose gaps the backend works around (shared/WINE.md and
// the notes where it is used).
bool running_under_wine() noexcept;

}  // namespace ionet::iocp

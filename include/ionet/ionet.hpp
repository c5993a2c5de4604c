/// \file
/// Umbrella header: everything a user of ionet needs.
#pragma once

#include "ionet/engine.hpp"
#include "ionet/error.hpp"
#include "ionet/events.hpp"
#include "ionet/framed_client.hpp"
#include "ionet/options.hpp"
#include "ionet/version.hpp"

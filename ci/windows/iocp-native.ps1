<#
.SYNOPSIS
  The IOCP backend's test plan on a real Windows host (tests/iocp/README.md).

.DESCRIPTION
  Runs the windows-msvc workflow (configure, build, every suite), then the
  hidden native-only tests tagged [windows-native]. Prints one line per step
  and exits 0 only when every step passed. Needs Visual Studio's build tools
  on PATH (a Developer PowerShell) and VCPKG_ROOT set.

.PARAMETER Preset
  The CMake workflow preset to build and test with (default windows-msvc).

.PARAMETER SkipSuites
  Only build and run the native-only tests.
#>
[CmdletBinding()]
param(
  [string]$Preset = "windows-msvc",
  [switch]$SkipSuites
)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")

$results = @()
function Step([string]$Name, [scriptblock]$Body) {
  Write-Host "=== iocp-native: $Name"
  $start = Get-Date
  & $Body
  $ok = ($LASTEXITCODE -eq 0)
  $secs = [int]((Get-Date) - $start).TotalSeconds
  $script:results += ("{0}: {1} ({2} s)" -f $Name, $(if ($ok) { "passed" } else { "FAILED" }), $secs)
  return $ok
}

$allOk = $true
if ($SkipSuites) {
  $allOk = (Step "configure" { cmake --preset $Preset }) -and $allOk
  $allOk = (Step "build" { cmake --build --preset $Preset }) -and $allOk
} else {
  $allOk = (Step "workflow $Preset" { cmake --workflow --preset $Preset }) -and $allOk
}

$exe = Get-ChildItem -Recurse -Filter "ionet-iocp-tests.exe" (Join-Path "build" $Preset) |
  Select-Object -First 1
if (-not $exe) {
  Write-Host "iocp-native: ionet-iocp-tests.exe was not built"
  exit 1
}
$allOk = (Step "native-only tests" {
  & $exe.FullName "[windows-native]" --durations yes --warn NoTests
}) -and $allOk

Write-Host ""
Write-Host "=== iocp-native summary"
$results | ForEach-Object { Write-Host $_ }
if ($allOk) { exit 0 } else { exit 1 }

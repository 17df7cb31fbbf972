//! The XSA-108-class test module (`testkernels/kmod/x2apic`) as the guest
//! tests see it: `rdmsr` through `/proc/hfx_x2apic`, and the two answers
//! that tell the bug (a read past the register page) from the fix (#GP).

use super::testhost::Guest;

/// Where the guest image carries the test modules.
pub const M: &str = "/lib/modules/hotfix";
/// The answer of the buggy code: data from beyond the register page.
pub const LEAK: &str = "msr 0x900 = 0x5ec2e700";
/// The answer of the fixed code.
pub const GP: &str = "msr 0x900 #GP";

/// Reads `msr` through the module's /proc interface.
pub fn rdmsr(g: &mut Guest, msr: &str) -> String {
    g.ok(&format!(
        "echo {msr} > /proc/hfx_x2apic && cat /proc/hfx_x2apic"
    ))
    .trim()
    .to_string()
}

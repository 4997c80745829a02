//! The lab's inventory, for unit tests: the one `meshctl lab up` writes,
//! taken from the lab crate rather than copied by hand.

use probemesh_model::inventory::Inventory;

/// The lab's inventory (as `meshctl lab up` writes it, no fault active).
pub fn lab_inventory() -> Inventory {
    let inv = meshctl_lab::topology::inventory(false).expect("lab inventory builds");
    inv.validate().expect("lab inventory is consistent");
    inv
}

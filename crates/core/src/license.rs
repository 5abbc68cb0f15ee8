//! Who may enroll, license-wise (docs/product.md "Distribution and enrollment").
//!
//! - Enrolling **with user affinity** needs a licensed user: the user enrolling, or
//!   failing one, the user associated with the device.
//! - Enrolling **without user affinity** needs a device license, unless a licensed user
//!   is associated with the device.
//!
//! [`check`] is the whole rule; the service gathers the facts and maps the refusal to
//! `402 license_required` with what is needed.

/// The facts the rule reads. A user is `None` when there is none, else whether that
/// user holds a license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LicenseFacts {
    /// The policy enrolls with user affinity.
    pub user_affinity: bool,
    /// The user named by the enrollment request.
    pub enrolling_user: Option<bool>,
    /// The device holds a device license.
    pub device_licensed: bool,
    /// The user associated with the device.
    pub associated_user: Option<bool>,
}

/// The license an enrollment lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LicenseNeeded {
    #[error("enrolling with user affinity needs a user with a license")]
    UserLicense,
    #[error(
        "enrolling without user affinity needs a device license, or a licensed user associated with the device"
    )]
    DeviceLicense,
}

impl LicenseNeeded {
    /// The HTTP contract's `needs` value.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseNeeded::UserLicense => "user_license",
            LicenseNeeded::DeviceLicense => "device_license",
        }
    }
}

/// Whether an enrollment with these facts is licensed.
pub fn check(facts: LicenseFacts) -> Result<(), LicenseNeeded> {
    if facts.user_affinity {
        let user = facts.enrolling_user.or(facts.associated_user);
        return match user {
            Some(true) => Ok(()),
            _ => Err(LicenseNeeded::UserLicense),
        };
    }
    if facts.device_licensed || facts.associated_user == Some(true) {
        Ok(())
    } else {
        Err(LicenseNeeded::DeviceLicense)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user: none, unlicensed, licensed.
    const USERS: [Option<bool>; 3] = [None, Some(false), Some(true)];

    /// Every combination of affinity × enrolling user × device license × associated user,
    /// with the answer written out row by row (not computed by the rule under test).
    #[test]
    fn the_whole_licensing_matrix() {
        use LicenseNeeded::*;
        const N: Option<bool> = None;
        const U: Option<bool> = Some(false);
        const L: Option<bool> = Some(true);
        type Row = (
            bool,
            Option<bool>,
            bool,
            Option<bool>,
            Result<(), LicenseNeeded>,
        );
        #[rustfmt::skip]
        let table: [Row; 36] = [
            // affinity, enrolling user, device licensed, associated user → outcome
            (true, N, false, N, Err(UserLicense)),
            (true, N, false, U, Err(UserLicense)),
            (true, N, false, L, Ok(())),
            (true, N, true,  N, Err(UserLicense)),
            (true, N, true,  U, Err(UserLicense)),
            (true, N, true,  L, Ok(())),
            (true, U, false, N, Err(UserLicense)),
            (true, U, false, U, Err(UserLicense)),
            (true, U, false, L, Err(UserLicense)),
            (true, U, true,  N, Err(UserLicense)),
            (true, U, true,  U, Err(UserLicense)),
            (true, U, true,  L, Err(UserLicense)),
            (true, L, false, N, Ok(())),
            (true, L, false, U, Ok(())),
            (true, L, false, L, Ok(())),
            (true, L, true,  N, Ok(())),
            (true, L, true,  U, Ok(())),
            (true, L, true,  L, Ok(())),
            (false, N, false, N, Err(DeviceLicense)),
            (false, N, false, U, Err(DeviceLicense)),
            (false, N, false, L, Ok(())),
            (false, N, true,  N, Ok(())),
            (false, N, true,  U, Ok(())),
            (false, N, true,  L, Ok(())),
            (false, U, false, N, Err(DeviceLicense)),
            (false, U, false, U, Err(DeviceLicense)),
            (false, U, false, L, Ok(())),
            (false, U, true,  N, Ok(())),
            (false, U, true,  U, Ok(())),
            (false, U, true,  L, Ok(())),
            (false, L, false, N, Err(DeviceLicense)),
            (false, L, false, U, Err(DeviceLicense)),
            (false, L, false, L, Ok(())),
            (false, L, true,  N, Ok(())),
            (false, L, true,  U, Ok(())),
            (false, L, true,  L, Ok(())),
        ];
        let mut seen = std::collections::HashSet::new();
        for (user_affinity, enrolling_user, device_licensed, associated_user, expected) in table {
            let facts = LicenseFacts {
                user_affinity,
                enrolling_user,
                device_licensed,
                associated_user,
            };
            assert!(seen.insert(format!("{facts:?}")), "row repeated: {facts:?}");
            assert_eq!(check(facts), expected, "{facts:?}");
        }
        // The table covers the whole matrix.
        assert_eq!(seen.len(), 2 * USERS.len() * 2 * USERS.len());
    }

    #[test]
    fn refusals_name_what_is_needed() {
        assert_eq!(LicenseNeeded::UserLicense.as_str(), "user_license");
        assert_eq!(LicenseNeeded::DeviceLicense.as_str(), "device_license");
    }
}

//! Apple's routes, each with the method we use and what may be retried.

use reqwest::Method;

/// One of Apple's device assignment endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /session`: trade the OAuth-signed token for a session.
    Session,
    /// `GET /account`: the MDM server and organisation the token belongs to.
    Account,
    /// `POST /server/devices`: page through every device assigned (fetch).
    FetchDevices,
    /// `POST /devices/sync`: page through changes since a cursor (sync).
    SyncDevices,
    /// `POST /devices`: details of named devices.
    DeviceDetails,
    /// `POST /profile`: define an enrollment profile.
    DefineProfile,
    /// `GET /profile?profile_uuid=`: read a profile back.
    GetProfile,
    /// `PUT /profile/devices`: assign a profile to devices.
    AssignProfile,
    /// `DELETE /profile/devices`: clear the profile of devices.
    RemoveProfile,
    /// `POST /devices/disown`: remove devices from the organisation for good.
    DisownDevices,
}

impl Route {
    /// The path, as Apple lists it in `/account` `urls[].uri`.
    pub fn path(self) -> &'static str {
        match self {
            Route::Session => "/session",
            Route::Account => "/account",
            Route::FetchDevices => "/server/devices",
            Route::SyncDevices => "/devices/sync",
            Route::DeviceDetails => "/devices",
            Route::DefineProfile | Route::GetProfile => "/profile",
            Route::AssignProfile | Route::RemoveProfile => "/profile/devices",
            Route::DisownDevices => "/devices/disown",
        }
    }

    /// The HTTP method. Assignment uses PUT, which Apple accepts alongside the documented
    /// POST and which nanodep and fleet send "for compatibility" (depsim requires it).
    pub(crate) fn method(self) -> Method {
        match self {
            Route::Session | Route::Account | Route::GetProfile => Method::GET,
            Route::AssignProfile => Method::PUT,
            Route::RemoveProfile => Method::DELETE,
            Route::FetchDevices
            | Route::SyncDevices
            | Route::DeviceDetails
            | Route::DefineProfile
            | Route::DisownDevices => Method::POST,
        }
    }

    /// Sending the request twice has the effect of sending it once. Defining a profile is
    /// the exception: a repeat after a lost answer creates a second profile.
    pub(crate) fn is_idempotent(self) -> bool {
        self != Route::DefineProfile
    }

    /// A 404 here means the profile UUID is unknown.
    pub(crate) fn is_profile(self) -> bool {
        matches!(
            self,
            Route::GetProfile | Route::AssignProfile | Route::RemoveProfile
        )
    }
}

//! Synthetic names for simulated patients. Deliberately common and varied; any match with a
//! real person is a coincidence.

pub(crate) const FIRST: [&str; 32] = [
    "Ada", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko",
    "Liam", "Maria", "Nikolai", "Olivia", "Pedro", "Quinn", "Rosa", "Samir", "Tess", "Umar",
    "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Anika", "Bruno", "Carmen", "Dmitri", "Esther",
    "Felix",
];

pub(crate) const LAST: [&str; 32] = [
    "Abbott",
    "Berg",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ivanova",
    "Jansen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quispe",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Ueda",
    "Varga",
    "Walsh",
    "Xu",
    "Yilmaz",
    "Zimmermann",
    "Almeida",
    "Brennan",
    "Chen",
    "Dalton",
    "Evans",
    "Novak",
];

/// Rooms a home motion sensor reports.
pub(crate) const ROOMS: [&str; 5] = ["living-room", "kitchen", "hallway", "bedroom", "bathroom"];

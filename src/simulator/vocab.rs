//! Word lists the fake agent's properties are drawn from: a lettings and sales agent with two
//! branches in east London and Essex. Telephone numbers are from Ofcom's ranges reserved for
//! drama, and web/e-mail domains are made up, so nothing here reaches a real person.

/// An area the agent covers: name, post town, county, postcode district, latitude, longitude.
pub struct Area {
    pub name: &'static str,
    pub town: &'static str,
    pub county: &'static str,
    pub district: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// Index into [`BRANCHES`] of the branch that handles it.
    pub branch: usize,
}

macro_rules! area {
    ($name:expr, $town:expr, $county:expr, $district:expr, $lat:expr, $lon:expr, $branch:expr) => {
        Area {
            name: $name,
            town: $town,
            county: $county,
            district: $district,
            lat: $lat,
            lon: $lon,
            branch: $branch,
        }
    };
}

pub const AREAS: &[Area] = &[
    area!("Romford", "Romford", "Essex", "RM1", 51.5768, 0.1801, 0),
    area!("Gidea Park", "Romford", "Essex", "RM2", 51.5853, 0.2057, 0),
    area!("Harold Wood", "Romford", "Essex", "RM3", 51.5929, 0.2334, 0),
    area!(
        "Hornchurch",
        "Hornchurch",
        "Essex",
        "RM11",
        51.5563,
        0.2180,
        0
    ),
    area!(
        "Elm Park",
        "Hornchurch",
        "Essex",
        "RM12",
        51.5497,
        0.1977,
        0
    ),
    area!(
        "Upminster",
        "Upminster",
        "Essex",
        "RM14",
        51.5558,
        0.2508,
        0
    ),
    area!("Rainham", "Rainham", "Essex", "RM13", 51.5172, 0.1904, 0),
    area!(
        "Brentwood",
        "Brentwood",
        "Essex",
        "CM14",
        51.6211,
        0.3055,
        0
    ),
    area!(
        "Shenfield",
        "Brentwood",
        "Essex",
        "CM15",
        51.6310,
        0.3299,
        0
    ),
    area!("Grays", "Grays", "Essex", "RM17", 51.4762, 0.3232, 0),
    area!("Ilford", "Ilford", "Essex", "IG1", 51.5590, 0.0820, 1),
    area!("Gants Hill", "Ilford", "Essex", "IG2", 51.5765, 0.0662, 1),
    area!("Seven Kings", "Ilford", "Essex", "IG3", 51.5640, 0.0972, 1),
    area!(
        "Chadwell Heath",
        "Romford",
        "Essex",
        "RM6",
        51.5680,
        0.1290,
        1
    ),
    area!("Barking", "Barking", "Essex", "IG11", 51.5396, 0.0810, 1),
    area!(
        "Woodford Green",
        "Woodford Green",
        "Essex",
        "IG8",
        51.6071,
        0.0340,
        1
    ),
    area!("Leytonstone", "London", "", "E11", 51.5683, 0.0083, 1),
    area!("Stratford", "London", "", "E15", 51.5413, -0.0032, 1),
    area!("Forest Gate", "London", "", "E7", 51.5496, 0.0243, 1),
];

pub struct Branch {
    pub name: &'static str,
    pub tel: &'static str,
}

pub const BRANCHES: &[Branch] = &[
    Branch {
        name: "Romford",
        tel: "01632 960184",
    },
    Branch {
        name: "Ilford",
        tel: "020 7946 0372",
    },
];

/// Negotiators: name and mobile (per branch, two each).
pub const NEGOTIATORS: &[[(&str, &str); 2]] = &[
    [
        ("Sophie Carter", "07700 900417"),
        ("Daniel Okafor", "07700 900238"),
    ],
    [
        ("Priya Shah", "07700 900561"),
        ("Tom Whitfield", "07700 900902"),
    ],
];

pub const AGENT_DOMAIN: &str = "harbourmoss-homes.co.uk";

pub const STREET_NAMES: &[&str] = &[
    "Victoria",
    "Albert",
    "Station",
    "Church",
    "Mill",
    "Kings",
    "Queens",
    "Manor",
    "Elm",
    "Oak",
    "Beech",
    "Cedar",
    "Hillside",
    "Meadow",
    "Brook",
    "Western",
    "Eastern",
    "Crown",
    "Castle",
    "Heath",
    "Balgores",
    "Mawney",
    "Marshalls",
    "Cranbrook",
    "Clements",
    "Belmont",
    "Windsor",
    "Osborne",
    "Carlton",
    "Hamilton",
    "Stanley",
    "Wellington",
    "Grosvenor",
    "Kingston",
    "Redbridge",
    "Havering",
    "Nelson",
    "Rosslyn",
    "Ashburton",
    "Brunswick",
    "Coronation",
    "Highfield",
    "Lodge",
    "Orchard",
    "Priory",
    "Sandringham",
    "Tudor",
    "Warwick",
    "York",
];

pub const STREET_KINDS: &[&str] = &[
    "Road", "Road", "Road", "Avenue", "Avenue", "Close", "Gardens", "Lane", "Street", "Drive",
    "Way", "Crescent", "Grove", "Park", "Place",
];

pub const BLOCK_NAMES: &[&str] = &[
    "Kingsley Court",
    "Regent House",
    "Ashdown Court",
    "Parkside Lodge",
    "Mercury Gardens",
    "Clockhouse Court",
    "The Maltings",
    "Victoria House",
    "Lime Court",
    "Station Approach",
];

pub const HEATING: &[&str] = &[
    "Gas Central Heating",
    "Gas Central Heating",
    "Gas Central Heating",
    "Electric Heating",
    "Underfloor Heating",
    "Communal Heating",
    "Air Source Heat Pump",
];

pub const AGES: &[&str] = &[
    "Victorian",
    "Edwardian",
    "1930s",
    "1950s",
    "1960s",
    "1980s",
    "1990s",
    "2000s",
    "New Build",
    "",
];

pub const FURNISHED_WORDS: [&str; 4] = [
    "furnished",
    "part furnished",
    "unfurnished",
    "furnished or unfurnished",
];

pub const NEARBY: &[&str] = &[
    "the station",
    "the Elizabeth line",
    "local shops and cafés",
    "the high street",
    "well regarded schools",
    "the A12",
    "the park",
    "the shopping centre",
    "bus routes",
];

pub const FEATURES: &[&str] = &[
    "Modern Fitted Kitchen",
    "Double Glazing",
    "Close to Station",
    "Private Garden",
    "Off Street Parking",
    "Newly Decorated",
    "Wood Flooring",
    "Family Bathroom",
    "En-Suite to Master",
    "Allocated Parking",
    "Close to Schools",
    "Walk to Elizabeth Line",
    "Integrated Appliances",
    "Juliet Balcony",
    "Gated Development",
    "Garage",
    "Loft Storage",
    "Downstairs WC",
    "Utility Room",
    "South Facing Garden",
];

pub const STRAPLINES: &[&str] = &[
    "Stunning {beds} bedroom {type} – moments from {area} station",
    "Spacious {type} in the heart of {area}",
    "Well presented {beds} bedroom {type} with {feature}",
    "Must see {type} close to {nearby}",
    "Bright and airy {type}, ideal for commuters",
    "Recently refurbished {beds} bed {type} in {area}",
];

//! The fake agent's advertised properties, generated from the seed.
//!
//! Only the text of the records is kept in memory (a few KB a property); media bytes are
//! rebuilt from their own seeds when asked for (see `media.rs`), so 500 properties with
//! ~100 MB of photos cost almost nothing until requested.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::seq::SliceRandom;
use rand::Rng;

use super::php_json::{Record, Val};
use super::seeds::{self, chance, pick, weighted, Stream};
use super::vocab::{self, AREAS, BRANCHES, NEGOTIATORS};

/// 2025-01-01T00:00:00Z: records were last changed some time after this, before any mutate.
pub const BASE_MODIFIED: u64 = 1_735_689_600;
/// 2025-03-01 in days since the Unix epoch: the earliest `available` date.
const BASE_AVAILABLE_DAY: i64 = 20_148;

/// `rentorbuy`: 1 let, 2 sale, 3 both.
pub const LET: u8 = 1;
pub const SALE: u8 = 2;
pub const BOTH: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Photo,
    Epc,
    Floorplan,
    Brochure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaFormat {
    Jpeg,
    Pdf,
}

/// A media file of a property: everything but its bytes.
#[derive(Debug, Clone)]
pub struct MediaRef {
    pub kind: MediaKind,
    pub format: MediaFormat,
    pub filename: String,
    /// Photos 1..=9, EPC 9000, floorplan 9005, brochure 9006 (Rentman's numbering).
    pub imgorder: u32,
    /// Size of the decoded file in bytes.
    pub size: usize,
    /// Seed of the file's own generator.
    pub seed: u64,
}

/// How the price is shown in `displayprice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PriceStyle {
    PerMonth,
    PerWeek,
    Plain,
    Guide,
    OffersInExcess,
    OffersOver,
}

/// One advertised property. Text fields hold exactly what the API sends.
#[derive(Debug, Clone)]
pub struct Property {
    pub propref: u32,
    /// `propref` as the API sends it (a string).
    pub propref_text: String,
    pub rentorbuy: u8,
    pub featured: bool,
    pub nonres: bool,
    pub commercial: bool,
    pub shortlet: bool,
    /// Whole pounds: monthly rent (weekly for a `PerWeek` room) or asking price.
    pub price: u64,
    price_style: PriceStyle,
    /// Bumped by every mutate; part of nothing the API shows, but handy in logs.
    pub version: u32,
    /// Unix seconds of the last change (for `Last-Modified`).
    pub modified: u64,
    pub displayaddress: String,
    pub displayprice: String,
    pub rentmonth: String,
    pub number: String,
    pub street: String,
    pub address3: String,
    pub address4: String,
    pub postcode: String,
    pub area: String,
    pub type_: String,
    pub floor: String,
    pub status: String,
    pub description: String,
    pub comments: String,
    pub strapline: String,
    pub bullets: String,
    pub beds: String,
    pub singles: String,
    pub doubles: String,
    pub baths: String,
    pub receps: String,
    pub furnished: String,
    pub heating: String,
    pub available: String,
    pub age: String,
    pub rating: String,
    pub servicecharges: String,
    pub leaselength: String,
    pub url: String,
    pub evt: String,
    pub geolocation: String,
    pub branch: String,
    pub branchtel: String,
    pub negotiatorname: String,
    pub negotiatoremail: String,
    pub negotiatormobile: String,
    /// Photos first (imgorder 1..), then EPC, floorplan, brochure, i.e. by `imgorder`.
    pub media: Vec<MediaRef>,
}

const FLAG_STR: [&str; 2] = ["\u{0}", "\u{1}"];

impl Property {
    pub fn photos(&self) -> impl Iterator<Item = &MediaRef> {
        self.media.iter().filter(|m| m.kind == MediaKind::Photo)
    }

    pub fn first_photo(&self) -> Option<&MediaRef> {
        self.photos().next()
    }

    fn media_name(&self, kind: MediaKind) -> &str {
        self.media
            .iter()
            .find(|m| m.kind == kind)
            .map_or("", |m| m.filename.as_str())
    }

    pub fn is_let(&self) -> bool {
        self.rentorbuy == LET || self.rentorbuy == BOTH
    }

    pub fn is_sale(&self) -> bool {
        self.rentorbuy == SALE || self.rentorbuy == BOTH
    }

    /// The full record in the API's field order. `binary` is `photo1binary`, left out
    /// entirely when `None` (`noimage=1`).
    pub fn record<'a>(&'a self, binary: Option<&'a str>, int_flags: bool) -> Record<'a> {
        let flag = |on: bool| {
            if int_flags {
                Val::Int(on as i64)
            } else {
                Val::Str(FLAG_STR[on as usize])
            }
        };
        let rob = ["0", "1", "2", "3"][self.rentorbuy as usize];
        let mut r = Record::with_capacity(64);
        r.str("propref", &self.propref_text);
        r.str("displayaddress", &self.displayaddress);
        r.str("displayprice", &self.displayprice);
        r.str("rentmonth", &self.rentmonth);
        r.str("rentorbuy", rob);
        r.str("number", &self.number);
        r.str("street", &self.street);
        r.str("address3", &self.address3);
        r.str("address4", &self.address4);
        r.str("postcode", &self.postcode);
        r.str("area", &self.area);
        r.str("TYPE", &self.type_);
        r.str("FLOOR", &self.floor);
        r.str("STATUS", &self.status);
        r.str("DESCRIPTION", &self.description);
        r.str("comments", &self.comments);
        r.str("strapline", &self.strapline);
        r.str("bullets", &self.bullets);
        r.str("beds", &self.beds);
        r.str("singles", &self.singles);
        r.str("doubles", &self.doubles);
        r.str("baths", &self.baths);
        r.str("receps", &self.receps);
        r.str("furnished", &self.furnished);
        r.str("heating", &self.heating);
        r.str("available", &self.available);
        r.str("age", &self.age);
        r.str("rating", &self.rating);
        r.str("servicecharges", &self.servicecharges);
        r.str("leaselength", &self.leaselength);
        const PHOTO_KEYS: [&str; 9] = [
            "photo1", "photo2", "photo3", "photo4", "photo5", "photo6", "photo7", "photo8",
            "photo9",
        ];
        let mut photos = self.photos();
        for key in PHOTO_KEYS {
            r.str(key, photos.next().map_or("", |m| m.filename.as_str()));
        }
        if let Some(b) = binary {
            r.str("photo1binary", b);
        }
        r.str("floorplan", self.media_name(MediaKind::Floorplan));
        r.str("epc", self.media_name(MediaKind::Epc));
        r.str("brochure", self.media_name(MediaKind::Brochure));
        r.str("url", &self.url);
        r.str("evt", &self.evt);
        r.str("geolocation", &self.geolocation);
        r.str("branch", &self.branch);
        r.str("branchtel", &self.branchtel);
        r.str("negotiatorname", &self.negotiatorname);
        r.str("negotiatoremail", &self.negotiatoremail);
        r.str("negotiatormobile", &self.negotiatormobile);
        r.push("featured", flag(self.featured));
        r.push("nonres", flag(self.nonres));
        r.push("commercial", flag(self.commercial));
        r.push("shortlet", flag(self.shortlet));
        r
    }

    /// The `onlyarea=1` shape.
    pub fn area_record(&self) -> Record<'_> {
        let mut r = Record::with_capacity(3);
        r.str("propref", &self.propref_text);
        r.str("postcode", &self.postcode);
        r.str("area", &self.area);
        r
    }

    fn set_price(&mut self, price: u64) {
        self.price = price;
        let money = thousands(price);
        self.displayprice = match self.price_style {
            PriceStyle::PerMonth => format!("£{money} pcm"),
            PriceStyle::PerWeek => format!("£{money} pw"),
            PriceStyle::Plain => format!("£{money}"),
            PriceStyle::Guide => format!("Guide Price £{money}"),
            PriceStyle::OffersInExcess => format!("Offers in Excess of £{money}"),
            PriceStyle::OffersOver => format!("Offers Over £{money}"),
        };
        self.rentmonth = if self.price_style == PriceStyle::PerWeek {
            let pence = price * 100 * 52 / 12;
            format!("{}.{:02}", pence / 100, pence % 100)
        } else {
            format!("{price}.00")
        };
    }
}

/// `1450` -> `1,450`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `rob=` of `propertyadvertising.php`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rob {
    Rent,
    Sale,
}

/// `propref=`: a number, or something that matches no property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropSel {
    Id(u32),
    NoMatch,
}

/// The parameters of `propertyadvertising.php` that change its answer (all others are
/// ignored by the API), normalised so equal answers share one cache key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListQuery {
    pub rob: Option<Rob>,
    pub featured: bool,
    pub noimage: bool,
    pub onlyarea: bool,
    pub propref: Option<PropSel>,
    pub limit: Option<usize>,
    pub page: Option<usize>,
}

/// Rows of a list of `len` items that a `limit`/`page` pair selects: `page` starts at 1,
/// `page` without `limit` means 25 a page, `limit` without `page` means the first `limit`,
/// neither means everything.
pub fn page_range(len: usize, limit: Option<usize>, page: Option<usize>) -> std::ops::Range<usize> {
    let (per_page, page) = match (limit, page) {
        (None, None) => return 0..len,
        (Some(l), None) => (l, 1),
        (None, Some(p)) => (25, p),
        (Some(l), Some(p)) => (l, p),
    };
    let start = per_page.saturating_mul(page.max(1) - 1).min(len);
    start..start.saturating_add(per_page).min(len)
}

/// The agent's whole advertised stock.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub seed: u64,
    pub int_flags: bool,
    pub properties: Vec<Property>,
    /// Media file name -> (index of the property, index of the media item).
    by_filename: HashMap<String, (usize, usize)>,
    /// Bumped by every mutate so cached answers built from older data are never served.
    pub generation: u64,
}

impl Dataset {
    pub fn generate(seed: u64, count: u32, int_flags: bool) -> Dataset {
        let n = count as usize;
        // Kinds of listing are dealt exactly (75/20/5) and then shuffled, so small data sets
        // still have every kind and the shares do not wobble with the seed.
        let mut layout = seeds::rng(seed, Stream::Layout, count as u64, 0);
        let both = (n as f64 * 0.05).round() as usize;
        let sale = (n as f64 * 0.20).round() as usize;
        let mut kinds: Vec<u8> = (0..n)
            .map(|i| {
                if i < both {
                    BOTH
                } else if i < both + sale {
                    SALE
                } else {
                    LET
                }
            })
            .collect();
        kinds.shuffle(&mut layout);
        let featured_count = (7 + layout.gen_range(0..4u32) as usize).min((n / 2).max(1));
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut layout);
        let mut featured = vec![false; n];
        for &i in &order[..featured_count] {
            featured[i] = true;
        }

        let properties: Vec<Property> = (0..n)
            .map(|i| generate_property(seed, i as u32 + 1, kinds[i], featured[i]))
            .collect();
        let mut by_filename = HashMap::new();
        for (pi, p) in properties.iter().enumerate() {
            for (mi, m) in p.media.iter().enumerate() {
                by_filename.insert(m.filename.clone(), (pi, mi));
            }
        }
        Dataset {
            seed,
            int_flags,
            properties,
            by_filename,
            generation: 0,
        }
    }

    pub fn get(&self, propref: u32) -> Option<&Property> {
        // Proprefs are 1..=N in order.
        self.properties.get((propref as usize).checked_sub(1)?)
    }

    pub fn media_by_filename(&self, filename: &str) -> Option<(&Property, &MediaRef)> {
        let &(pi, mi) = self.by_filename.get(filename)?;
        let p = &self.properties[pi];
        Some((p, &p.media[mi]))
    }

    /// The properties `propertyadvertising.php` answers with, in propref order.
    pub fn select(&self, q: &ListQuery) -> Vec<&Property> {
        match q.propref {
            Some(PropSel::Id(id)) => return self.get(id).into_iter().collect(),
            Some(PropSel::NoMatch) => return Vec::new(),
            None => {}
        }
        let matching: Vec<&Property> = self
            .properties
            .iter()
            .filter(|p| match q.rob {
                Some(Rob::Rent) => p.is_let(),
                Some(Rob::Sale) => p.is_sale(),
                None => true,
            })
            .filter(|p| !q.featured || p.featured)
            .collect();
        let range = page_range(matching.len(), q.limit, q.page);
        matching[range].to_vec()
    }

    /// Changes a property the way an agent editing it would: the price goes up a step. Every
    /// answer containing it changes (and so does its `Last-Modified`, always forwards).
    pub fn mutate(&mut self, propref: u32) -> Option<&Property> {
        let idx = (propref as usize)
            .checked_sub(1)
            .filter(|&i| i < self.properties.len())?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let p = &mut self.properties[idx];
        let step = match p.price_style {
            PriceStyle::PerMonth => 25,
            PriceStyle::PerWeek => 5,
            _ => 5_000,
        };
        p.set_price(p.price + step);
        p.version += 1;
        p.modified = now.max(p.modified + 1);
        self.generation += 1;
        Some(&self.properties[idx])
    }
}

/// Days since the Unix epoch to (year, month, day) (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const NUMBER_WORDS: [&str; 7] = ["No", "One", "Two", "Three", "Four", "Five", "Six"];

/// Adds the trailing space Rentman's address fields often carry.
fn maybe_space(rng: &mut impl Rng, s: String) -> String {
    if !s.is_empty() && chance(rng, 0.6) {
        s + " "
    } else {
        s
    }
}

fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Property types: name, relative weight, is a flat (has a floor), bedroom range.
const TYPES: &[(&str, u32, bool, u32, u32)] = &[
    ("Flat", 34, true, 1, 3),
    ("Studio", 6, true, 0, 0),
    ("Maisonette", 7, true, 2, 3),
    ("Terraced House", 18, false, 2, 4),
    ("Semi-Detached House", 14, false, 3, 4),
    ("Detached House", 5, false, 3, 5),
    ("Bungalow", 5, false, 2, 3),
    ("Room", 6, true, 1, 1),
    ("Office", 3, true, 0, 0),
    ("Retail Unit", 2, false, 0, 0),
];

/// Photos per property, 0..=9, median 6.
const PHOTO_COUNT_WEIGHTS: [u32; 10] = [3, 3, 4, 6, 9, 14, 18, 16, 13, 14];

fn generate_property(seed: u64, propref: u32, rentorbuy: u8, featured: bool) -> Property {
    let mut rng = seeds::rng(seed, Stream::Property, propref as u64, 0);
    let rng = &mut rng;
    let for_sale = rentorbuy == SALE;

    let mut ti = weighted(rng, &TYPES.iter().map(|t| t.1).collect::<Vec<_>>());
    // Rooms are only let, and commercial units are rarely sold by a lettings agent.
    if for_sale && (TYPES[ti].0 == "Room" || TYPES[ti].0 == "Retail Unit") {
        ti = 0;
    }
    let (type_name, _, is_flat, min_beds, max_beds) = TYPES[ti];
    let commercial = matches!(type_name, "Office" | "Retail Unit");
    let room = type_name == "Room";
    let beds = rng.gen_range(min_beds..=max_beds);

    let area = pick(rng, AREAS);
    let street = format!(
        "{} {}",
        pick(rng, vocab::STREET_NAMES),
        pick(rng, vocab::STREET_KINDS)
    );
    let house_no = rng.gen_range(1..=180u32);
    let number = if is_flat && !commercial {
        if chance(rng, 0.4) {
            format!(
                "Flat {}, {}",
                rng.gen_range(1..=40u32),
                pick(rng, vocab::BLOCK_NAMES)
            )
        } else {
            format!("Flat {}, {house_no}", rng.gen_range(1..=12u32))
        }
    } else if commercial {
        format!("Unit {}, {house_no}", rng.gen_range(1..=6u32))
    } else {
        house_no.to_string()
    };
    const LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";
    let postcode = format!(
        "{} {}{}{}",
        area.district,
        rng.gen_range(1..=9u32),
        *pick(rng, LETTERS) as char,
        *pick(rng, LETTERS) as char
    );
    let lat = area.lat + rng.gen_range(-0.012..0.012);
    let lon = area.lon + rng.gen_range(-0.018..0.018);

    let (price, price_style) = if rentorbuy == SALE {
        let base: u64 = match beds {
            0 => rng.gen_range(150..200),
            1 => rng.gen_range(200..280),
            2 => rng.gen_range(260..380),
            3 => rng.gen_range(350..550),
            4 => rng.gen_range(480..750),
            _ => rng.gen_range(650..1100),
        };
        let style = [
            PriceStyle::Plain,
            PriceStyle::Guide,
            PriceStyle::OffersInExcess,
            PriceStyle::OffersOver,
        ][weighted(rng, &[12, 4, 2, 2])];
        (
            base * 1000 / 5000 * 5000 + if commercial { 50_000 } else { 0 },
            style,
        )
    } else if room {
        (rng.gen_range(30..45u64) * 5, PriceStyle::PerWeek)
    } else {
        let base: u64 = match beds {
            0 if commercial => rng.gen_range(1200..3500),
            0 => rng.gen_range(950..1200),
            1 => rng.gen_range(1200..1550),
            2 => rng.gen_range(1450..1950),
            3 => rng.gen_range(1800..2500),
            4 => rng.gen_range(2300..3200),
            _ => rng.gen_range(3000..4200),
        };
        (base / 25 * 25, PriceStyle::PerMonth)
    };

    let status = match rentorbuy {
        BOTH => "ForSale&ToLet",
        SALE => ["For Sale", "Under Offer", "Sold", "Valuation"][weighted(rng, &[75, 15, 6, 4])],
        _ => [
            "Available",
            "Under Offer",
            "Unavailable",
            "Withdrawn",
            "Valuation",
        ][weighted(rng, &[80, 12, 4, 2, 2])],
    };

    // Media: photos, then EPC 9000, floorplan 9005, brochure 9006.
    let mut media = Vec::new();
    let photo_count = weighted(rng, &PHOTO_COUNT_WEIGHTS);
    for i in 0..photo_count {
        let size = seeds::log_normal(rng, 120_000.0, 0.42).clamp(50_000.0, 370_000.0) as usize;
        media.push(media_ref(
            rng,
            seed,
            propref,
            MediaKind::Photo,
            MediaFormat::Jpeg,
            i as u32 + 1,
            size,
        ));
    }
    let has_epc = !commercial && chance(rng, if for_sale { 0.7 } else { 0.8 });
    if has_epc {
        let size = rng.gen_range(30_000..90_000);
        media.push(media_ref(
            rng,
            seed,
            propref,
            MediaKind::Epc,
            MediaFormat::Jpeg,
            9000,
            size,
        ));
    }
    if chance(rng, 0.55) {
        let size = rng.gen_range(40_000..150_000);
        media.push(media_ref(
            rng,
            seed,
            propref,
            MediaKind::Floorplan,
            MediaFormat::Jpeg,
            9005,
            size,
        ));
    }
    if chance(rng, 0.25) {
        let (format, size) = if chance(rng, 0.5) {
            (MediaFormat::Pdf, rng.gen_range(100_000..450_000))
        } else {
            (MediaFormat::Jpeg, rng.gen_range(80_000..250_000))
        };
        media.push(media_ref(
            rng,
            seed,
            propref,
            MediaKind::Brochure,
            format,
            9006,
            size,
        ));
    }

    let branch_idx = area.branch;
    let branch = &BRANCHES[branch_idx];
    let (neg_name, neg_mobile) = *pick(rng, &NEGOTIATORS[branch_idx]);
    let neg_email = format!(
        "{}@{}",
        neg_name.to_ascii_lowercase().replace(' ', "."),
        vocab::AGENT_DOMAIN
    );

    let available_day = BASE_AVAILABLE_DAY + rng.gen_range(0..240i64);
    let (y, m, d) = civil_from_days(available_day);
    let available = format!("{y:04}-{m:02}-{d:02}");
    let available_words = format!("{d} {} {y}", MONTHS[m as usize - 1]);

    let furnished = if rentorbuy == SALE || commercial {
        3
    } else {
        rng.gen_range(1..=4u32)
    };
    let singles = if beds >= 3 {
        rng.gen_range(0..=1u32)
    } else {
        0
    };
    let doubles = beds - singles;
    let baths = if beds == 0 {
        1
    } else {
        1 + u32::from(beds >= 3) + u32::from(beds >= 4 && chance(rng, 0.5))
    };
    let receps = match beds {
        0 => 0,
        1 | 2 => 1,
        _ => rng.gen_range(1..=2u32),
    };
    let rating = if has_epc {
        ["B", "C", "C", "D", "D", "D", "E", "F"][rng.gen_range(0..8u32) as usize]
    } else {
        ""
    };
    let band = ["A", "B", "C", "C", "D", "D", "E", "F"][rng.gen_range(0..8u32) as usize];
    let (servicecharges, leaselength) = if for_sale && is_flat && !commercial {
        let years = [
            "99 years",
            "125 years",
            "150 years",
            "Share of Freehold",
            "189 years",
        ];
        (
            format!("{}.00", rng.gen_range(8..26u32) * 100),
            pick(rng, &years).to_string(),
        )
    } else {
        (String::new(), String::new())
    };

    let type_lower = type_name.to_ascii_lowercase();
    let beds_word = NUMBER_WORDS[(beds as usize).min(6)].to_ascii_lowercase();
    let nearby1 = *pick(rng, vocab::NEARBY);
    let nearby2 = *pick(rng, vocab::NEARBY);
    let feature = pick(rng, vocab::FEATURES).to_ascii_lowercase();

    let mut description = String::new();
    let adjective = *pick(
        rng,
        &[
            "A well presented",
            "A spacious",
            "A bright",
            "A beautifully refurbished",
            "A charming",
        ],
    );
    if commercial {
        let _ = write!(
            description,
            "{adjective} {type_lower} on {street} in {}, close to {nearby1}.",
            area.name
        );
    } else if beds == 0 {
        let _ = write!(
            description,
            "{adjective} studio on {street} in {}, close to {nearby1} and {nearby2}.",
            area.name
        );
    } else {
        let _ = write!(
            description,
            "{adjective} {beds_word} bedroom {type_lower} on {street} in {}, within easy reach of {nearby1} and {nearby2}.",
            area.name
        );
    }
    description.push_str("\r\n\r\n");
    let sqm = 25 + beds * rng.gen_range(18..28u32);
    if room {
        let _ = write!(
            description,
            "A double room in a shared house with a communal kitchen and bathroom. All bills included. \
             Internal area approx. {sqm} m²."
        );
    } else {
        let _ = write!(
            description,
            "The accommodation comprises an entrance hall, {}, {}, {} and {}. Internal area approx. {sqm} m².",
            if receps > 0 { "a reception room" } else { "an open-plan living space" },
            if commercial { "a kitchenette" } else { "a modern fitted kitchen" },
            if beds == 0 { "a sleeping area".to_string() } else { format!("{beds_word} bedroom{}", if beds > 1 { "s" } else { "" }) },
            if baths > 1 { "two bathrooms" } else { "a bathroom" }
        );
    }
    description.push_str("\r\n\r\n");
    if rentorbuy == SALE {
        let _ = write!(
            description,
            "Offered with no onward chain. Council tax band {band}."
        );
    } else {
        let weekly = price * 12 / 52;
        let deposit = if price_style == PriceStyle::PerWeek {
            price * 5
        } else {
            weekly * 5
        };
        let _ = write!(
            description,
            "Offered {} and available from {available_words}. Deposit £{}. Council tax band {band}.",
            vocab::FURNISHED_WORDS[furnished as usize - 1],
            thousands(deposit)
        );
    }

    let strapline = pick(rng, vocab::STRAPLINES)
        .replace("{beds}", &beds_word)
        .replace("{type}", &type_lower)
        .replace("{area}", area.name)
        .replace("{feature}", &feature)
        .replace("{nearby}", nearby1);

    let mut bullets: Vec<String> = Vec::new();
    bullets.push(match (beds, commercial, room) {
        (_, true, _) => format!("{sqm} m² Floor Area"),
        (_, _, true) => "Bills Included".to_string(),
        (0, _, _) => "Studio Apartment".to_string(),
        (b, _, _) => format!(
            "{} Bedroom{}",
            NUMBER_WORDS[(b as usize).min(6)],
            if b > 1 { "s" } else { "" }
        ),
    });
    let extra = rng.gen_range(3..=11usize);
    let mut features: Vec<&str> = vocab::FEATURES.to_vec();
    features.shuffle(rng);
    bullets.extend(features.iter().take(extra).map(|s| s.to_string()));
    if !rating.is_empty() && bullets.len() < 12 {
        bullets.push(format!("EPC Rating {rating}"));
    }
    if bullets.len() < 12 {
        bullets.push(format!("Council Tax Band {band}"));
    }

    let comments = if chance(rng, 0.3) {
        format!(
            "Viewing strictly by appointment with our {} office.",
            branch.name
        )
    } else {
        String::new()
    };
    let evt = if chance(rng, 0.3) {
        format!(
            "https://tours.{}/{}/",
            vocab::AGENT_DOMAIN,
            seeds::guid(rng).to_ascii_lowercase()
        )
    } else {
        String::new()
    };
    let floor = if (is_flat && !room && type_name != "Maisonette") || (room && chance(rng, 0.5)) {
        pick(
            rng,
            &[
                "Ground",
                "First",
                "Second",
                "Third",
                "Fourth",
                "Lower Ground",
            ],
        )
        .to_string()
    } else {
        String::new()
    };
    let age = pick(rng, vocab::AGES).to_string();
    let heating = pick(rng, vocab::HEATING).to_string();
    let nonres = commercial;
    let shortlet = room && chance(rng, 0.3);

    let mut p = Property {
        propref,
        propref_text: propref.to_string(),
        rentorbuy,
        featured,
        nonres,
        commercial,
        shortlet,
        price: 0,
        price_style,
        version: 0,
        modified: BASE_MODIFIED + rng.gen_range(0..60 * 86_400u64),
        displayaddress: format!("{street}, {}, {}", area.name, area.district),
        displayprice: String::new(),
        rentmonth: String::new(),
        number: maybe_space(rng, number),
        street: maybe_space(rng, street.clone()),
        address3: maybe_space(rng, area.town.to_string()),
        address4: maybe_space(rng, area.county.to_string()),
        postcode,
        area: area.name.to_string(),
        type_: type_name.to_string(),
        floor,
        status: status.to_string(),
        description,
        comments,
        strapline,
        bullets: bullets.join("\r"),
        beds: beds.to_string(),
        singles: singles.to_string(),
        doubles: doubles.to_string(),
        baths: baths.to_string(),
        receps: receps.to_string(),
        furnished: furnished.to_string(),
        heating,
        available,
        age,
        rating: rating.to_string(),
        servicecharges,
        leaselength,
        url: format!(
            "https://www.{}/property/{propref}/{}",
            vocab::AGENT_DOMAIN,
            slug(&format!("{street} {}", area.name))
        ),
        evt,
        geolocation: format!("{lat:.6},{lon:.6}"),
        branch: branch.name.to_string(),
        branchtel: branch.tel.to_string(),
        negotiatorname: neg_name.to_string(),
        negotiatoremail: neg_email,
        negotiatormobile: neg_mobile.to_string(),
        media,
    };
    p.set_price(price);
    p
}

fn media_ref(
    rng: &mut impl Rng,
    seed: u64,
    propref: u32,
    kind: MediaKind,
    format: MediaFormat,
    imgorder: u32,
    size: usize,
) -> MediaRef {
    let ext = match format {
        MediaFormat::Jpeg => "jpg",
        MediaFormat::Pdf => "pdf",
    };
    MediaRef {
        kind,
        format,
        filename: format!("{}.{ext}", seeds::guid(rng)),
        imgorder,
        size,
        seed: seeds::derive(seed, Stream::Media, propref as u64, imgorder as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_rules() {
        assert_eq!(page_range(120, None, None), 0..120);
        assert_eq!(page_range(120, Some(10), None), 0..10);
        assert_eq!(page_range(120, None, Some(1)), 0..25);
        assert_eq!(page_range(120, None, Some(5)), 100..120);
        assert_eq!(page_range(120, None, Some(6)), 120..120);
        assert_eq!(page_range(120, Some(25), Some(2)), 25..50);
        assert_eq!(page_range(30, Some(25), Some(2)), 25..30);
        assert_eq!(page_range(30, Some(25), Some(3)), 30..30);
        assert_eq!(page_range(5, Some(500), None), 0..5);
        assert_eq!(
            page_range(120, Some(10), Some(0)),
            0..10,
            "page 0 is read as page 1"
        );
        assert_eq!(
            page_range(120, Some(usize::MAX), Some(usize::MAX)),
            120..120
        );
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let a = Dataset::generate(1, 120, false);
        let b = Dataset::generate(1, 120, false);
        let c = Dataset::generate(2, 120, false);
        let dump = |d: &Dataset| {
            d.properties
                .iter()
                .map(|p| {
                    String::from_utf8(super::super::php_json::to_vec(&p.record(None, false)))
                        .unwrap()
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(dump(&a), dump(&b));
        assert_ne!(dump(&a), dump(&c));
    }

    #[test]
    fn shares_of_let_sale_both_and_featured() {
        for seed in [1, 2, 3] {
            let d = Dataset::generate(seed, 120, false);
            let count = |k| d.properties.iter().filter(|p| p.rentorbuy == k).count();
            assert_eq!((count(LET), count(SALE), count(BOTH)), (90, 24, 6));
            let featured = d.properties.iter().filter(|p| p.featured).count();
            assert!((7..=10).contains(&featured), "{featured} featured");
        }
        let small = Dataset::generate(1, 10, false);
        assert!(small.properties.iter().any(|p| p.rentorbuy == SALE));
        assert!((1..=5).contains(&small.properties.iter().filter(|p| p.featured).count()));
    }

    #[test]
    fn photos_counts_and_sizes() {
        let d = Dataset::generate(1, 500, false);
        let mut counts: Vec<usize> = d.properties.iter().map(|p| p.photos().count()).collect();
        counts.sort();
        assert!(counts.iter().all(|&c| c <= 9));
        assert!(
            (5..=7).contains(&counts[250]),
            "median photos {}",
            counts[250]
        );
        assert!(counts[0] == 0 && counts[499] == 9);
        let mut sizes: Vec<usize> = d
            .properties
            .iter()
            .flat_map(|p| p.photos().map(|m| m.size))
            .collect();
        sizes.sort();
        assert!(sizes.iter().all(|&s| (50_000..=370_000).contains(&s)));
        let median = sizes[sizes.len() / 2];
        assert!(
            (100_000..=140_000).contains(&median),
            "median photo {median}"
        );
        // imgorder is 1.. for photos, then 9000/9005/9006, in that order.
        for p in &d.properties {
            let orders: Vec<u32> = p.media.iter().map(|m| m.imgorder).collect();
            assert!(orders.windows(2).all(|w| w[0] < w[1]), "{orders:?}");
            for (i, ph) in p.photos().enumerate() {
                assert_eq!(ph.imgorder, i as u32 + 1);
            }
        }
        assert!(d
            .properties
            .iter()
            .any(|p| p.media.iter().any(|m| m.format == MediaFormat::Pdf)));
    }

    #[test]
    fn records_look_like_rentman() {
        let d = Dataset::generate(1, 120, false);
        let p = d.get(1).unwrap();
        let rec = p.record(Some("QUJD"), false);
        let keys: Vec<&str> = rec.0.iter().map(|(k, _)| *k).collect();
        for k in [
            "propref",
            "displayprice",
            "rentmonth",
            "TYPE",
            "STATUS",
            "photo9",
            "photo1binary",
            "geolocation",
            "shortlet",
        ] {
            assert!(keys.contains(&k), "{k}");
        }
        assert!(rec.0.iter().all(|(_, v)| matches!(v, Val::Str(_))));
        let any_trailing = d
            .properties
            .iter()
            .filter(|p| p.street.ends_with(' '))
            .count();
        assert!(any_trailing > 30);
        for p in &d.properties {
            assert!(
                p.displayprice.starts_with('£') || p.displayprice.contains(" £"),
                "{}",
                p.displayprice
            );
            assert!(p.rentmonth.contains('.'), "{}", p.rentmonth);
            assert!(p.bullets.split('\r').count() <= 12);
            assert_eq!(p.available.len(), 10);
            assert!(p.geolocation.contains(','));
        }
        let let_ = d
            .properties
            .iter()
            .find(|p| p.price_style == PriceStyle::PerMonth)
            .unwrap();
        assert_eq!(let_.displayprice, format!("£{} pcm", thousands(let_.price)));
        assert_eq!(let_.rentmonth, format!("{}.00", let_.price));
        let ints = p.record(None, true);
        assert_eq!(ints.get("featured"), Some(&Val::Int(p.featured as i64)));
        assert_eq!(
            p.record(None, false).get("nonres"),
            Some(&Val::Str("\u{0}"))
        );
        assert!(p.record(None, false).get("photo1binary").is_none());
    }

    #[test]
    fn select_filters() {
        let d = Dataset::generate(1, 120, false);
        let q = |f: fn(&mut ListQuery)| {
            let mut q = ListQuery::default();
            f(&mut q);
            d.select(&q).iter().map(|p| p.propref).collect::<Vec<_>>()
        };
        assert_eq!(q(|_| {}).len(), 120);
        assert_eq!(q(|q| q.rob = Some(Rob::Rent)).len(), 96);
        assert_eq!(q(|q| q.rob = Some(Rob::Sale)).len(), 30);
        assert!(q(|q| q.featured = true)
            .iter()
            .all(|&id| d.get(id).unwrap().featured));
        assert_eq!(q(|q| q.propref = Some(PropSel::Id(7))), vec![7]);
        assert!(q(|q| q.propref = Some(PropSel::Id(121))).is_empty());
        assert!(q(|q| q.propref = Some(PropSel::NoMatch)).is_empty());
        let rent = q(|q| q.rob = Some(Rob::Rent));
        let page2 = q(|q| {
            q.rob = Some(Rob::Rent);
            q.limit = Some(25);
            q.page = Some(2);
        });
        assert_eq!(page2, rent[25..50].to_vec());
    }

    #[test]
    fn mutate_changes_price_and_moves_modified_forward() {
        let mut d = Dataset::generate(1, 20, false);
        let before = d.get(3).unwrap().clone();
        let after = d.mutate(3).unwrap().clone();
        assert!(after.price > before.price);
        assert_ne!(after.displayprice, before.displayprice);
        assert!(after.modified > before.modified);
        assert_eq!(after.version, 1);
        assert_eq!(d.generation, 1);
        assert!(d.mutate(21).is_none() && d.mutate(0).is_none());
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(BASE_AVAILABLE_DAY), (2025, 3, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(thousands(1450), "1,450");
        assert_eq!(thousands(325_000), "325,000");
        assert_eq!(thousands(1_100_000), "1,100,000");
        assert_eq!(thousands(950), "950");
    }
}

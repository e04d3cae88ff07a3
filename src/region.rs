//! Regions: the 31 provincial-level divisions of mainland China and the nation, found by
//! English name, Chinese name (with or without its suffix) or GB/T 2260 code, in any case.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// One region of the table below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(&'static RegionInfo);

/// What we know of a region.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionInfo {
    /// GB/T 2260 code; `000000` for the nation.
    pub code: &'static str,
    /// English name as bulletins print it.
    pub name_en: &'static str,
    /// Chinese name with its suffix (黑龙江省).
    pub name_zh: &'static str,
    /// The suffix that may be left off (省, 市, 自治区, ...).
    pub suffix_zh: &'static str,
    /// Other English spellings accepted on input.
    pub aliases: &'static [&'static str],
}

/// Why a region was not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "region `{0}` is not known: give an English or Chinese name of a province of China or its GB/T 2260 code (e.g. Heilongjiang, 黑龙江省, 230000), or China"
)]
pub struct UnknownRegion(pub String);

macro_rules! regions {
    ($($code:literal $en:literal $zh:literal $suffix:literal [$($alias:literal),*];)*) => {
        static REGIONS: &[RegionInfo] = &[$(RegionInfo {
            code: $code,
            name_en: $en,
            name_zh: $zh,
            suffix_zh: $suffix,
            aliases: &[$($alias),*],
        }),*];
    };
}

regions! {
    "000000" "China" "中国" "" ["CN", "PRC", "National", "全国", "中华人民共和国", "100000"];
    "110000" "Beijing" "北京市" "市" [];
    "120000" "Tianjin" "天津市" "市" [];
    "130000" "Hebei" "河北省" "省" [];
    "140000" "Shanxi" "山西省" "省" [];
    "150000" "Inner Mongolia" "内蒙古自治区" "自治区" ["Nei Mongol", "Neimenggu"];
    "210000" "Liaoning" "辽宁省" "省" [];
    "220000" "Jilin" "吉林省" "省" [];
    "230000" "Heilongjiang" "黑龙江省" "省" [];
    "310000" "Shanghai" "上海市" "市" [];
    "320000" "Jiangsu" "江苏省" "省" [];
    "330000" "Zhejiang" "浙江省" "省" [];
    "340000" "Anhui" "安徽省" "省" [];
    "350000" "Fujian" "福建省" "省" [];
    "360000" "Jiangxi" "江西省" "省" [];
    "370000" "Shandong" "山东省" "省" [];
    "410000" "Henan" "河南省" "省" [];
    "420000" "Hubei" "湖北省" "省" [];
    "430000" "Hunan" "湖南省" "省" [];
    "440000" "Guangdong" "广东省" "省" [];
    "450000" "Guangxi" "广西壮族自治区" "壮族自治区" ["Guangxi Zhuang"];
    "460000" "Hainan" "海南省" "省" [];
    "500000" "Chongqing" "重庆市" "市" [];
    "510000" "Sichuan" "四川省" "省" [];
    "520000" "Guizhou" "贵州省" "省" [];
    "530000" "Yunnan" "云南省" "省" [];
    "540000" "Tibet" "西藏自治区" "自治区" ["Xizang"];
    "610000" "Shaanxi" "陕西省" "省" [];
    "620000" "Gansu" "甘肃省" "省" [];
    "630000" "Qinghai" "青海省" "省" [];
    "640000" "Ningxia" "宁夏回族自治区" "回族自治区" ["Ningxia Hui"];
    "650000" "Xinjiang" "新疆维吾尔自治区" "维吾尔自治区" ["Xinjiang Uygur", "Xinjiang Uyghur"];
}

impl Region {
    /// The nation, whose facts give the national comparison.
    pub fn china() -> Region {
        Region(&REGIONS[0])
    }

    /// Every region, the nation first.
    pub fn all() -> impl Iterator<Item = Region> {
        REGIONS.iter().map(Region)
    }

    /// Finds a region by any of its names or its code, ignoring case, surrounding spaces,
    /// a trailing "province"/"municipality"/"autonomous region" and the Chinese suffix.
    pub fn parse(input: &str) -> Result<Region, UnknownRegion> {
        static NAMES: LazyLock<HashMap<String, &'static RegionInfo>> = LazyLock::new(|| {
            let mut names = HashMap::new();
            for info in REGIONS {
                let zh_short = info.name_zh.strip_suffix(info.suffix_zh).unwrap_or(info.name_zh);
                for name in [info.code, info.name_en, info.name_zh, zh_short]
                    .iter()
                    .chain(info.aliases)
                {
                    names.insert(normalise(name), info);
                }
            }
            names
        });
        if input.trim().is_empty() {
            return Err(UnknownRegion(String::new()));
        }
        NAMES
            .get(&normalise(input))
            .map(|info| Region(info))
            .ok_or_else(|| UnknownRegion(input.chars().take(60).collect()))
    }

    pub fn code(&self) -> &'static str {
        self.0.code
    }

    pub fn name_en(&self) -> &'static str {
        self.0.name_en
    }

    pub fn name_zh(&self) -> &'static str {
        self.0.name_zh
    }

    pub fn is_national(&self) -> bool {
        self.0.code == "000000"
    }

    /// Lower-case ASCII name for routing keys and storage paths (`inner-mongolia`).
    pub fn slug(&self) -> String {
        self.0.name_en.to_ascii_lowercase().replace(' ', "-")
    }
}

fn normalise(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let mut joined = words.join(" ");
    for suffix in [" province", " municipality", " autonomous region", " city"] {
        if let Some(stripped) = joined.strip_suffix(suffix) {
            joined = stripped.to_string();
            break;
        }
    }
    joined
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name_en)
    }
}

impl Serialize for Region {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.name_en)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Region::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_province_by_every_name() {
        for name in [
            "Heilongjiang",
            "heilongjiang",
            " HEILONGJIANG ",
            "Heilongjiang Province",
            "黑龙江",
            "黑龙江省",
            "230000",
        ] {
            assert_eq!(Region::parse(name).unwrap().code(), "230000", "{name}");
        }
        assert_eq!(Region::parse("广西").unwrap().name_en(), "Guangxi");
        assert_eq!(Region::parse("广西壮族自治区").unwrap().name_en(), "Guangxi");
        assert_eq!(Region::parse("xizang").unwrap().name_en(), "Tibet");
        assert_eq!(Region::parse("Inner  Mongolia").unwrap().slug(), "inner-mongolia");
        assert!(Region::parse("CN").unwrap().is_national());
        assert!(Region::parse("china").unwrap().is_national());
    }

    #[test]
    fn has_thirty_one_provinces_and_the_nation() {
        assert_eq!(Region::all().count(), 32);
        let codes: std::collections::HashSet<_> = Region::all().map(|r| r.code()).collect();
        assert_eq!(codes.len(), 32);
    }

    #[test]
    fn names_what_it_did_not_find() {
        let err = Region::parse("Atlantis").unwrap_err().to_string();
        assert!(err.contains("`Atlantis` is not known"), "{err}");
        assert!(Region::parse("").is_err());
        assert!(Region::parse("省").is_err());
        assert!(Region::parse("230001").is_err());
    }
}

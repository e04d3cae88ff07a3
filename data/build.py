#!/usr/bin/env python3
"""Build data/facts.csv, the shipped sample dataset of tradebulletin.

Usage: python3 data/build.py [SHARED_DATA_DIR]   (default: ../shared/data relative to the repo root)

Python 3.11, standard library only. Output is deterministic (sorted rows, integer values).
See data/README.md for the sources and for what is back-computed or illustrative.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter, defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
OUT = HERE / "facts.csv"
COLUMNS = ["region", "period", "partner", "flow", "product", "value", "currency", "source", "note"]

NOTE_BACK = "back-computed as value/(1+growth)"
NOTE_ILLUSTRATIVE = "illustrative level"
NOTE_NBS_ROUNDED = "rounded to 10 million dollars by NBS"
NOTE_NATIONAL_USD = "sum of 31 provinces (NBS A060101), not the customs national total"

PROVINCES = {
    "110000": "Beijing", "120000": "Tianjin", "130000": "Hebei", "140000": "Shanxi",
    "150000": "Inner Mongolia", "210000": "Liaoning", "220000": "Jilin",
    "230000": "Heilongjiang", "310000": "Shanghai", "320000": "Jiangsu",
    "330000": "Zhejiang", "340000": "Anhui", "350000": "Fujian", "360000": "Jiangxi",
    "370000": "Shandong", "410000": "Henan", "420000": "Hubei", "430000": "Hunan",
    "440000": "Guangdong", "450000": "Guangxi", "460000": "Hainan", "500000": "Chongqing",
    "510000": "Sichuan", "520000": "Guizhou", "530000": "Yunnan", "540000": "Tibet",
    "610000": "Shaanxi", "620000": "Gansu", "630000": "Qinghai", "640000": "Ningxia",
    "650000": "Xinjiang",
}

NBS_SOURCE = "NBS annual data A060101 https://data.stats.gov.cn/english/easyquery.htm?cn=E0103"
CD_SOURCE = "China Daily 2019-07-19 bulletin (Heilongjiang H1 2019)"
HLJ_COMMERCE_SOURCE = "Heilongjiang Department of Commerce (H1 2019)"

# Short descriptions of the source pages of china_national_cny_headlines.csv.
NATIONAL_SOURCES = {
    "http://english.customs.gov.cn/Statics/2f4b39ab-d7cb-44d9-a754-efd65d07a6c5.html": "GACC Review of H1 2019",
    "http://english.www.gov.cn/archive/statistics/2018/07/13/content_281476220268366.htm": "gov.cn 2018-07-13 H1 2018 trade",
    "https://www.marketscreener.com/news/Central-People-Government-of-People-Re-China-s-foreign-trade-up-4-2-in-first-seven-months--29032349/": "MarketScreener (gov.cn) Jan-Jul 2019 trade",
    "https://lankachinajf.com/?p=1122": "LankaChinaJF Jan-Jul 2019 trade",
    "http://english.customs.gov.cn/Statics/7373728b-5ec9-4de1-a515-28a163780c70.html": "GACC Review Q1-Q3 2019",
    "https://www.cantonfair.net/home/news/china-s-foreign-trade-import-and-export-scale-reached-an-all-time-high-of-30-51-trillion-yuan-in-2018-but-december-significantly-less-than-expected": "Canton Fair news 2018 full-year trade",
    "https://zhejiang.chinadaily.com.cn/2021-07/14/c_642587.htm": "China Daily 2021-07-14 H1 2021 trade",
    "http://www.segodnia.ru/news/223308": "Segodnia (GACC via RT) China-Russia 2019",
}

UNITS = {  # unit in the national file -> (currency, multiplier to whole units)
    "CNY trillion": ("CNY", Decimal("1e12")),
    "CNY billion": ("CNY", Decimal("1e9")),
    "USD billion": ("USD", Decimal("1e9")),
}


def whole(x: Decimal) -> int:
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def back_compute(value: int, growth_pct: Decimal) -> int:
    return whole(Decimal(value) / (1 + growth_pct / 100))


def growth_1dp(cur: int, prev: int) -> Decimal:
    return ((Decimal(cur) / Decimal(prev) - 1) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def normalise_period(p: str) -> str:
    p = p.strip()
    if re.fullmatch(r"\d{4}(-H[12]|-Q[1-4]|-(0[1-9]|1[0-2]))?", p):
        return p
    m = re.fullmatch(r"(\d{4})-(\d{2})\.\.(\d{2})", p)
    if not m:
        raise ValueError(f"unrecognised period {p!r}")
    y, a, b = m.group(1), int(m.group(2)), int(m.group(3))
    if not 1 <= a <= b <= 12:
        raise ValueError(f"bad month range {p!r}")
    if a == b:
        return f"{y}-{a:02d}"
    if (a, b) == (1, 12):
        return y
    if (a, b) == (1, 6):
        return f"{y}-H1"
    if (a, b) == (7, 12):
        return f"{y}-H2"
    if a % 3 == 1 and b == a + 2:
        return f"{y}-Q{(a + 2) // 3}"
    return f"{y}-{a:02d}..{b:02d}"


def year_ago(p: str) -> str:
    return f"{int(p[:4]) - 1}{p[4:]}"


class Facts:
    def __init__(self) -> None:
        self.rows: dict[tuple, dict] = {}
        self.group: dict[tuple, str] = {}
        # (key) -> (value_now, published growth, key_now) for the growth check
        self.growth_checks: list[tuple[tuple, Decimal, tuple]] = []

    def add(self, group, region, period, partner, flow, product, value, currency, source, note=""):
        assert flow in ("total", "exports", "imports"), flow
        assert currency in ("CNY", "USD"), currency
        assert isinstance(value, int) and value >= 0, value
        key = (region, period, partner, flow, product, currency)
        if key in self.rows:
            raise SystemExit(f"duplicate fact {key}")
        self.rows[key] = dict(zip(COLUMNS, [region, period, partner, flow, product, str(value), currency, source, note]))
        self.group[key] = group
        return key

    def add_back(self, group, key_now, growth, note=NOTE_BACK, source=None):
        """Add the year-ago level of fact key_now, back-computed from its growth rate."""
        region, period, partner, flow, product, currency = key_now
        now = self.rows[key_now]
        prev = back_compute(int(now["value"]), growth)
        k = self.add(group, region, year_ago(period), partner, flow, product, prev, currency,
                     source or now["source"], note)
        self.growth_checks.append((k, growth, key_now))
        return k

    def value(self, key) -> int:
        return int(self.rows[key]["value"])


# ---------------------------------------------------------------- A + B: Heilongjiang H1 2019
def heilongjiang(f: Facts, shared: Path) -> None:
    text = (shared / "000_10a2ee56568c75b8.txt").read_text(encoding="utf-8")
    # (partner, flow, product, bn yuan, growth %, phrases that must appear in the bulletin)
    published = [
        ("World", "total", "all", "93.34", "21.5", ["93.34 billion yuan", "21.5 percent"]),
        ("World", "exports", "all", "16.28", "22.9", ["16.28 billion yuan", "22.9 percent"]),
        ("World", "imports", "all", "77.06", "21.2", ["77.06 billion yuan", "21.2 percent"]),
        ("World", "exports", "high-tech", "1.4", "140", ["1.4 billion yuan export", "growth of 1.4 times"]),
        ("Russia", "total", "all", "64.27", "20.3", ["64.27 billion yuan", "20.3 percent"]),
        ("Russia", "exports", "all", "4.2", "13.7", ["4.2 billion yuan", "13.7 percent"]),
        ("Russia", "imports", "all", "60.07", "20.8", ["60.07 billion yuan", "20.8 percent"]),
    ]
    for partner, flow, product, bn, g, phrases in published:
        for ph in phrases:
            assert ph in text, f"bulletin does not contain {ph!r}"
        k = f.add("A heilongjiang-2019H1", "Heilongjiang", "2019-H1", partner, flow, product,
                  whole(Decimal(bn) * Decimal("1e9")), "CNY", CD_SOURCE)
        f.add_back("B heilongjiang-2018H1", k, Decimal(g))

    assert "$13.57billion" in text
    f.add("A heilongjiang-2019H1", "Heilongjiang", "2019-H1", "World", "total", "all",
          13_570_000_000, "USD", CD_SOURCE)  # no USD year-ago level: none is published

    # EU: level from the commerce department (5.95 bn, +12.79 %); the bulletin prints +13 %.
    # The year-ago level uses 13 so that the dataset reproduces the bulletin's printed rate.
    assert "increased 13 percent, 10.6 percent and 9.5 percent" in text
    k = f.add("A heilongjiang-2019H1", "Heilongjiang", "2019-H1", "EU", "total", "all",
              5_950_000_000, "CNY", HLJ_COMMERCE_SOURCE)
    f.add_back("B heilongjiang-2018H1", k, Decimal("13"),
               source=f"{HLJ_COMMERCE_SOURCE}; growth from {CD_SOURCE}")

    # Japan and South Korea: levels are NOT public; illustrative levels, published growth rates.
    for partner, level, g in (("Japan", 1_150_000_000, "10.6"), ("South Korea", 1_320_000_000, "9.5")):
        k = f.add("A heilongjiang-2019H1", "Heilongjiang", "2019-H1", partner, "total", "all",
                  level, "CNY", f"illustrative; growth from {CD_SOURCE}", NOTE_ILLUSTRATIVE)
        f.add_back("B heilongjiang-2018H1", k, Decimal(g),
                   note=f"{NOTE_ILLUSTRATIVE}; {NOTE_BACK}")


# ---------------------------------------------------------------- C: China national headlines
def national(f: Facts, shared: Path, skipped: list[str]) -> None:
    with open(shared / "china_national_cny_headlines.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 41, len(rows)

    last_url = ""
    with_value = []
    for i, r in enumerate(rows, start=2):  # line numbers in the file (header is line 1)
        url = r["source_url"].strip()
        if url == "same as above":
            url = last_url
        last_url = url
        period = normalise_period(r["period"])
        desc = f"{r['period']} {r['partner']} {r['flow']}"
        if r["flow"] == "balance":
            skipped.append(f"national line {i} ({desc}): balance row, balance is derived by the code")
            continue
        if not r["value"].strip():
            skipped.append(f"national line {i} ({desc}): no value (yoy {r['yoy_pct']} % only), not a fact")
            continue
        currency, mult = UNITS[r["unit"]]
        value = whole(Decimal(r["value"]) * mult)
        source = f"{NATIONAL_SOURCES[url]} {url}"
        k = f.add("C china-headlines", "China", period, r["partner"], r["flow"], "all",
                  value, currency, source)
        with_value.append((k, r["yoy_pct"].strip()))

    # Year-ago levels: published where the file has one, else back-computed from yoy.
    for k, yoy in with_value:
        if not yoy:
            continue
        region, period, partner, flow, product, currency = k
        prev_key = (region, year_ago(period), partner, flow, product, currency)
        if prev_key in f.rows:  # published year-ago level (e.g. 2018-H1 total 14.12 trn)
            f.growth_checks.append((prev_key, Decimal(yoy), k))
            continue
        f.add_back("C china-headlines back-computed", k, Decimal(yoy))


# ---------------------------------------------------------------- D + E: NBS provincial annual
def nbs(f: Facts, shared: Path, skipped: list[str]) -> None:
    with open(shared / "cn_nbs_province_trade_annual_2016_2024.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    sums: dict[str, int] = defaultdict(int)
    counts: Counter = Counter()
    n_other = 0
    for r in rows:
        if r["indicator_code"] != "A060101":
            n_other += 1
            continue
        region = PROVINCES[r["region_code"]]
        year = r["year"].strip()
        value = whole(Decimal(r["value_thousand_usd"]) * 1000)
        note = NOTE_NBS_ROUNDED if year in ("2021", "2022", "2023") else ""
        f.add("D nbs-provinces", region, year, "World", "total", "all", value, "USD", NBS_SOURCE, note)
        sums[year] += value
        counts[year] += 1
    skipped.append(f"NBS file: {n_other} rows of indicator A060201 (by destination/source) not used")
    for year in sorted(sums):
        assert counts[year] == 31, (year, counts[year])
        f.add("E china-usd-sum", "China", year, "World", "total", "all", sums[year], "USD",
              NBS_SOURCE, NOTE_NATIONAL_USD)


# ---------------------------------------------------------------- checks
def check(f: Facts) -> None:
    # 1. growth computed back from the stored integers rounds to the published rate
    for prev_key, g, now_key in f.growth_checks:
        got = growth_1dp(f.value(now_key), f.value(prev_key))
        want = g.quantize(Decimal("0.1"))
        assert got == want, f"growth {now_key} vs {prev_key}: {got} != {want}"
    # 2. total vs exports + imports within 0.5 % of total
    by = defaultdict(dict)
    for (region, period, partner, flow, product, currency), row in f.rows.items():
        by[(region, period, partner, product, currency)][flow] = int(row["value"])
    n = 0
    for k, flows in by.items():
        if {"total", "exports", "imports"} <= flows.keys():
            t, s = flows["total"], flows["exports"] + flows["imports"]
            assert abs(t - s) < Decimal("0.005") * t, f"inconsistent {k}: total {t} vs {s}"
            n += 1
    # 3. plain whole numbers, no commas in unquoted fields is handled by csv; values are ints
    for row in f.rows.values():
        assert re.fullmatch(r"\d+", row["value"]), row
    print(f"checks: {len(f.growth_checks)} growth rates reproduced, {n} total/exports/imports triples consistent")


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT.parent / "shared" / "data"
    shared = shared.resolve()
    f = Facts()
    skipped: list[str] = []
    heilongjiang(f, shared)
    national(f, shared, skipped)
    nbs(f, shared, skipped)
    check(f)

    with open(OUT, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for key in sorted(f.rows):
            w.writerow(f.rows[key])

    print(f"wrote {OUT} ({len(f.rows)} rows)")
    for g, c in sorted(Counter(f.group.values()).items()):
        print(f"  {g}: {c}")
    for s in skipped:
        print(f"skipped: {s}")
    hlj = f.value(("Heilongjiang", "2019", "World", "total", "all", "USD"))
    print(f"sanity: Heilongjiang 2019 USD total = {hlj} (~27.11 bn expected)")
    assert abs(hlj - 27_110_000_000) < 10_000_000, hlj
    cn = f.value(("China", "2019", "World", "total", "all", "USD"))
    print(f"sanity: China 2019 USD (sum of provinces) = {cn} (~4577.9 bn; customs 4576.1 bn)")
    hl = f.value(("Heilongjiang", "2019-H1", "World", "total", "all", "CNY"))
    cn_h1 = f.value(("China", "2019-H1", "World", "total", "all", "CNY"))
    cn_h0 = f.value(("China", "2018-H1", "World", "total", "all", "CNY"))
    print(f"sanity: Heilongjiang 2019-H1 CNY total = {hl}; national H1 growth = "
          f"{growth_1dp(cn_h1, cn_h0)} % (3.9 published)")


if __name__ == "__main__":
    main()

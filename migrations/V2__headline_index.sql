-- The nation's headline series (all partners, all products) by region and period, so that a
-- summary reads the nation's few headline rows without scanning its partners and products.
CREATE INDEX facts_headline ON facts (region_code, year, first_month, last_month)
    WHERE partner = 'World' AND product = 'all';

-- Trade facts, one row per (region, period, partner, flow, product, currency): the natural
-- key of the contract, which makes re-importing a file an upsert that changes nothing.
-- The primary key's order serves the summary's query: one region (and the nation), one or two
-- years, the months of the period.
CREATE TABLE facts (
    region_code  text             NOT NULL CHECK (region_code ~ '^[0-9]{6}$'),
    year         smallint         NOT NULL CHECK (year BETWEEN 1950 AND 2100),
    first_month  smallint         NOT NULL CHECK (first_month BETWEEN 1 AND 12),
    last_month   smallint         NOT NULL CHECK (last_month BETWEEN first_month AND 12),
    partner      text             NOT NULL,
    flow         text             NOT NULL CHECK (flow IN ('total', 'exports', 'imports')),
    product      text             NOT NULL,
    currency     text             NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    value        double precision NOT NULL CHECK (value >= 0),
    source       text,
    note         text,
    PRIMARY KEY (region_code, year, first_month, last_month, partner, flow, product, currency)
);

-- Event dates are accepted only from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z:
-- a date outside could not be rendered as RFC 3339 (four-digit years), and one stored row
-- like that broke every listing. Rows stored before the API checked are moved to the nearest
-- edge, one microsecond apart per name so they stay apart from each other; one whose new
-- (name, date) is already taken by an event inside the window also gets its id's first
-- characters appended to its name, so the move can never break the (name, date) key. Then
-- the table is held to the window.
WITH outside AS (
    SELECT id,
           name,
           CASE
               WHEN date < '1970-01-01 00:00:00+00' THEN
                   timestamptz '1970-01-01 00:00:00+00'
                   + (row_number() OVER (PARTITION BY name, date < '1970-01-01 00:00:00+00'
                                         ORDER BY date, id) - 1) * interval '1 microsecond'
               ELSE
                   timestamptz '9999-12-31 23:59:59.999999+00'
                   - (row_number() OVER (PARTITION BY name, date < '1970-01-01 00:00:00+00'
                                         ORDER BY date DESC, id) - 1) * interval '1 microsecond'
           END AS moved_to
    FROM events
    WHERE date < '1970-01-01 00:00:00+00' OR date >= '10000-01-01 00:00:00+00'
)
UPDATE events e
SET date = o.moved_to,
    name = CASE
        WHEN EXISTS (
            SELECT 1 FROM events inside
            WHERE inside.name = o.name
              AND inside.date = o.moved_to
              AND inside.date >= '1970-01-01 00:00:00+00'
              AND inside.date < '10000-01-01 00:00:00+00'
        ) THEN left(o.name, 189) || ' (' || left(e.id::text, 8) || ')'
        ELSE o.name
    END
FROM outside o
WHERE e.id = o.id;

ALTER TABLE events ADD CONSTRAINT events_date_window
    CHECK (date >= '1970-01-01 00:00:00+00' AND date < '10000-01-01 00:00:00+00');

-- Names are stored in Unicode NFC, so two spellings of one text ("Café" precomposed or with
-- a combining accent) are one name to the (name, date) key. Rows stored before are
-- normalized; where that would make two events one, the later gets its id's first
-- characters appended. Normalization needs a UTF8 database (the embedded one is).
DO $$
BEGIN
    IF current_setting('server_encoding') = 'UTF8' THEN
        WITH ranked AS (
            SELECT id,
                   normalize(name, NFC) AS nfc,
                   row_number() OVER (
                       PARTITION BY normalize(name, NFC), date
                       ORDER BY (name IS NFC NORMALIZED) DESC, created_at, id
                   ) AS n
            FROM events
        )
        UPDATE events e
        SET name = CASE
                WHEN r.n = 1 THEN r.nfc
                ELSE left(r.nfc, 189) || ' (' || left(e.id::text, 8) || ')'
            END
        FROM ranked r
        WHERE e.id = r.id AND (e.name IS NOT NFC NORMALIZED OR r.n > 1);

        ALTER TABLE events ADD CONSTRAINT events_name_nfc CHECK (name IS NFC NORMALIZED);
    END IF;
END
$$;

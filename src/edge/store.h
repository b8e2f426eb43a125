/* store — the edge node's context store: places (GeoNames cities and brand points of
 * interest), radio cells, users and their visits, in one SQLite file with R*Tree indexes for
 * "what is near (lat, lon)" queries. The edge uses it to turn a concise prompt into a
 * comprehensive one; user ids and exact coordinates never leave it (DESIGN.md).
 *
 * Ownership and lifetime
 * - store_open returns an edge_store that owns the sqlite3 connection and every prepared
 *   statement; store_close frees them all. One edge_store is used by one thread at a time
 *   (SQLite statements are not shareable); a server opens one per worker.
 * - Results are plain value structs copied into arrays the caller provides (store_place,
 *   store_visit, ...): nothing returned points into the store, nothing needs freeing, and
 *   results stay valid after further calls. Text fields longer than their buffers are cut
 *   at a UTF-8 character boundary.
 * - Every function that can fail returns NG_OK or NG_ERR and fills err with what and where
 *   (a bad argument names the argument and its value; a bad input line names the file and
 *   line). Nothing here exits or aborts, so the request path may call every function.
 *
 * Data model (schema version 1)
 *   places(id INTEGER PK, kind 'city'|'poi', name, ascii_name, category, brand, city_id,
 *          country, admin1, lat, lon, population, tz, std_offset_min)
 *   places_rtree  R*Tree (id, min_lat, max_lat, min_lon, max_lon) over places
 *   brands(category, name, wikidata, weight, countries)   the imported brand list
 *   cells(id TEXT PK, lat, lon, radius_m) + cells_rtree over each cell's bounding box
 *   users(id TEXT PK, language, preferences, home_lat, home_lon, home_place, created)
 *   visits(user, place, time)   time in Unix seconds (UTC)
 *   meta(key PK, value)         schema_version, places_seed, attribution
 * City ids are GeoNames ids (< 2^31). POI ids are city_id * 1024 + category * 64 + n, so
 * they never collide with city ids and a re-import with the same seed gives the same ids
 * (visits keep pointing at the same POI).
 *
 * POI placement (store_import_places): for each city and category, n = 1 + floor(1.5 *
 * log10(population / 5000)) POIs when population >= 5000, none below; each picks a brand of
 * that category sold in the city's country (weighted by how often the brand occurs in
 * OpenStreetMap) and a point uniformly in the disc of STORE_POI_RADIUS_M around the city
 * centre, all from a hash of (seed, city id, category, n): same files + seed -> same rows.
 *
 * Coordinates are WGS84 degrees, distances great-circle metres on a sphere of radius
 * STORE_EARTH_RADIUS_M (haversine). Queries are exact: the R*Tree only prefilters by a
 * bounding box that is split at the antimeridian and widened to all longitudes near a pole. */
#ifndef NG_EDGE_STORE_H
#define NG_EDGE_STORE_H

#include <stdint.h>

#include "core/util.h"

#define STORE_EARTH_RADIUS_M 6371008.8   /* IUGG mean radius */
#define STORE_MAX_RADIUS_M 20015114.0    /* half the circumference: reaches every point */
#define STORE_POI_RADIUS_M 3000.0
#define STORE_MAX_LIMIT 1000             /* most rows one query returns */
#define STORE_ID_MAX 64                  /* user and cell ids: [A-Za-z0-9_.:-]{1,64} */

/* GeoNames attribution, which CC BY 4.0 requires wherever its data is shown. */
#define STORE_ATTRIBUTION                                                                                    \
    "City data: GeoNames (https://www.geonames.org/), licensed CC BY 4.0. "                                  \
    "Brands: name-suggestion-index (OpenStreetMap contributors), BSD-3-Clause."

typedef struct edge_store edge_store;

typedef enum { STORE_ANY = 0, STORE_CITY = 1, STORE_POI = 2 } store_kind;

typedef struct {
    int64_t id;
    store_kind kind;
    char name[192];
    char category[24]; /* "" for cities */
    char brand[128];   /* "" for cities */
    int64_t city_id;   /* the POI's city; the city's own id for a city */
    char country[4];   /* ISO 3166-1 alpha-2 */
    double lat, lon;
    int64_t population; /* 0 for POIs */
    char tz[48];        /* IANA zone name, "" when unknown */
    int std_offset_min; /* standard-time UTC offset, the fallback when tzdata lacks tz */
    double distance_m;  /* from the query point (queries); 0 otherwise */
} store_place;

typedef struct {
    double lat, lon;      /* query point */
    double radius_m;      /* (0, STORE_MAX_RADIUS_M]; 0 = no limit: the nearest, wherever */
    store_kind kind;      /* STORE_ANY, STORE_CITY, STORE_POI */
    const char *category; /* NULL or "" = any; else one of store_categories */
    int limit;            /* [1, STORE_MAX_LIMIT] */
} store_query;

typedef struct {
    char id[STORE_ID_MAX + 1];
    char language[16];
    char preferences[512];
    int has_home;
    double home_lat, home_lon;
    int64_t home_place; /* nearest city to home; 0 when no home */
} store_user;

typedef struct {
    int64_t time; /* Unix seconds, UTC */
    store_place place;
} store_visit;

typedef struct {
    char id[STORE_ID_MAX + 1];
    double lat, lon, radius_m;
    double distance_m; /* from the query point to the cell centre */
    int inside;        /* 1: the point is within radius_m of the centre */
} store_cell;

typedef struct {
    int64_t utc, local; /* local = utc + offset_s */
    int offset_s;
    int is_dst;          /* -1 when unknown (fixed-offset fallback) */
    char abbrev[16];     /* "CEST", "+03", "" when unknown */
    char tz[48];         /* zone name of the place */
    char iso[40];        /* local time as "2024-07-01T14:00:00+02:00" */
    int from_tzdata;     /* 1: system tz database; 0: the stored standard offset */
} store_localtime;

typedef struct {
    int64_t cities, pois, brands, cells, users, visits;
    int64_t seed; /* places_seed of the last import, -1 when none */
} store_stats;

/* The category names POIs may have, in the fixed order behind POI ids; NULL-terminated. */
extern const char *const store_categories[];

/* Opens the store at path. create = 1 makes the file and schema when missing (and checks an
 * existing one); create = 0 fails on a missing file. Fails when the file is not SQLite, has
 * another schema version, or this SQLite lacks R*Tree. Free with store_close. */
edge_store *store_open(const char *path, int create, ng_error *err);
void store_close(edge_store *st);

/* Imports cities_path then brands_path (build_places.js TSVs) and places POIs with seed, all
 * in one transaction: on failure nothing changes. Re-importing replaces cities by id and all
 * POIs and brands, so the result depends only on the files and seed. progress = 1 reports on
 * stderr every 50,000 rows. */
int store_import_places(edge_store *st, const char *cities_path, const char *brands_path, uint64_t seed,
                        int progress, ng_error *err);

/* Adds or replaces user u (id, language, preferences, has_home/home_lat/home_lon; home_place
 * is found here as the nearest city). */
int store_add_user(edge_store *st, const store_user *u, ng_error *err);
/* The user with id into *out; NG_ERR when there is none. */
int store_get_user(edge_store *st, const char *id, store_user *out, ng_error *err);
/* Records that user visited place at time (Unix seconds). Both must exist. */
int store_add_visit(edge_store *st, const char *user, int64_t place, int64_t time, ng_error *err);
/* Adds or replaces a cell. */
int store_add_cell(edge_store *st, const char *id, double lat, double lon, double radius_m, ng_error *err);

/* Places matching q, nearest first, into out[0..q->limit); *n gets how many. */
int store_nearest(edge_store *st, const store_query *q, store_place *out, int *n, ng_error *err);
/* The place with id into *out; NG_ERR when there is none. */
int store_get_place(edge_store *st, int64_t id, store_place *out, ng_error *err);
/* The user's visits, newest first, at most limit, with their places; *n gets how many. */
int store_recent_visits(edge_store *st, const char *user, store_visit *out, int limit, int *n, ng_error *err);
/* The cell that serves (lat, lon): among cells containing the point the one with the nearest
 * centre, else the nearest cell (inside = 0). *found = 0 when there are no cells. */
int store_cell_at(edge_store *st, double lat, double lon, store_cell *out, int *found, ng_error *err);
/* Local time at place at utc (Unix seconds), from the system tz database ($TZDIR or
 * /usr/share/zoneinfo) when it has the place's zone, else its standard offset. */
int store_local_time(edge_store *st, int64_t place, int64_t utc, store_localtime *out, ng_error *err);
int store_stats_get(edge_store *st, store_stats *out, ng_error *err);

/* Great-circle distance in metres between two points in degrees (haversine). */
double store_distance_m(double lat1, double lon1, double lat2, double lon2);
/* Parses "YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM|-HH:MM]" (no zone = UTC) into Unix seconds. */
int store_parse_time(const char *s, int64_t *out, ng_error *err);

/* The English name of an ISO 3166-1 alpha-2 country code ("FR" -> "France"), as the training
 * data writes it; the code itself when unknown. Static storage. */
const char *store_country_name(const char *code);

#endif

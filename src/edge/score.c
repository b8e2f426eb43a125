/* score — eval_pairs.js's counts, rule by rule (each rule's JS is quoted above the code that
 * mirrors it). Strings are UTF-8 here and UTF-16 in JS; what keeps the counts equal:
 *
 * - substring tests (String.includes, split(x).join(' ')) give the same answers in either encoding;
 * - the distance, time, weekday and language patterns have no 'u' flag: their \b and \d are ASCII,
 *   and bytes >= 0x80 are no word characters, as UTF-16 units >= 0x80 are not;
 * - brand and city names are found with /(^|[^\p{L}\p{N}])NAME(?=$|[^\p{L}\p{N}])/u: the code
 *   points around each occurrence are decoded and looked up in ln_ranges, made from node's
 *   Unicode data; toLowerCase is lower_runs, made likewise, and U+0130 -> "i\u0307" as in JS.
 *   JS's final-sigma rule (a word-final capital sigma lowers to U+03C2) is left out: it matters
 *   only when a fact's value holds a Greek sigma, and the facts' places are in Latin script;
 * - a name is kept when its JS length (UTF-16 units) is at least 3 (brands) or 4 (cities);
 * - invalid UTF-8 in a prompt reads as U+FFFD (no letter, no word character), as node decodes the
 *   JS scorer's prediction file. */
#include "edge/score.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* toLowerCase of the code points first, first + stride, ... last: + delta */
typedef struct {
    uint32_t first, last;
    int32_t delta;
    uint32_t stride;
} lower_run;

/* Printed by `node tools/data/pairs/make_score_fixtures.js --c-tables` (node 20, Unicode 17.0),
 * both from U+0080 on (ASCII is in the code). ln_ranges: the code points of \p{L} and \p{N};
 * unassigned code points join the ranges around them, which halves the table and changes nothing
 * on real text. lower_runs: toLowerCase of single code points. */
/* clang-format off */
static const uint32_t ln_ranges[][2] = {
    {0xaa, 0xaa}, {0xb2, 0xb3}, {0xb5, 0xb5}, {0xb9, 0xba}, {0xbc, 0xbe}, {0xc0, 0xd6}, {0xd8, 0xf6},
    {0xf8, 0x2c1}, {0x2c6, 0x2d1}, {0x2e0, 0x2e4}, {0x2ec, 0x2ec}, {0x2ee, 0x2ee}, {0x370, 0x374},
    {0x376, 0x37d}, {0x37f, 0x37f}, {0x386, 0x386}, {0x388, 0x3f5}, {0x3f7, 0x481}, {0x48a, 0x559},
    {0x560, 0x588}, {0x5d0, 0x5f2}, {0x620, 0x64a}, {0x660, 0x669}, {0x66e, 0x66f}, {0x671, 0x6d3},
    {0x6d5, 0x6d5}, {0x6e5, 0x6e6}, {0x6ee, 0x6fc}, {0x6ff, 0x6ff}, {0x710, 0x710}, {0x712, 0x72f},
    {0x74d, 0x7a5}, {0x7b1, 0x7ea}, {0x7f4, 0x7f5}, {0x7fa, 0x7fa}, {0x800, 0x815}, {0x81a, 0x81a},
    {0x824, 0x824}, {0x828, 0x828}, {0x840, 0x858}, {0x860, 0x887}, {0x889, 0x88f}, {0x8a0, 0x8c9},
    {0x904, 0x939}, {0x93d, 0x93d}, {0x950, 0x950}, {0x958, 0x961}, {0x966, 0x96f}, {0x971, 0x980},
    {0x985, 0x9b9}, {0x9bd, 0x9bd}, {0x9ce, 0x9ce}, {0x9dc, 0x9e1}, {0x9e6, 0x9f1}, {0x9f4, 0x9f9},
    {0x9fc, 0x9fc}, {0xa05, 0xa39}, {0xa59, 0xa6f}, {0xa72, 0xa74}, {0xa85, 0xab9}, {0xabd, 0xabd},
    {0xad0, 0xae1}, {0xae6, 0xaef}, {0xaf9, 0xaf9}, {0xb05, 0xb39}, {0xb3d, 0xb3d}, {0xb5c, 0xb61},
    {0xb66, 0xb6f}, {0xb71, 0xb77}, {0xb83, 0xbb9}, {0xbd0, 0xbd0}, {0xbe6, 0xbf2}, {0xc05, 0xc39},
    {0xc3d, 0xc3d}, {0xc58, 0xc61}, {0xc66, 0xc6f}, {0xc78, 0xc7e}, {0xc80, 0xc80}, {0xc85, 0xcb9},
    {0xcbd, 0xcbd}, {0xcdc, 0xce1}, {0xce6, 0xcf2}, {0xd04, 0xd3a}, {0xd3d, 0xd3d}, {0xd4e, 0xd4e},
    {0xd54, 0xd56}, {0xd58, 0xd61}, {0xd66, 0xd78}, {0xd7a, 0xd7f}, {0xd85, 0xdc6}, {0xde6, 0xdef},
    {0xe01, 0xe30}, {0xe32, 0xe33}, {0xe40, 0xe46}, {0xe50, 0xe59}, {0xe81, 0xeb0}, {0xeb2, 0xeb3},
    {0xebd, 0xec6}, {0xed0, 0xf00}, {0xf20, 0xf33}, {0xf40, 0xf6c}, {0xf88, 0xf8c}, {0x1000, 0x102a},
    {0x103f, 0x1049}, {0x1050, 0x1055}, {0x105a, 0x105d}, {0x1061, 0x1061}, {0x1065, 0x1066},
    {0x106e, 0x1070}, {0x1075, 0x1081}, {0x108e, 0x108e}, {0x1090, 0x1099}, {0x10a0, 0x10fa},
    {0x10fc, 0x135a}, {0x1369, 0x138f}, {0x13a0, 0x13fd}, {0x1401, 0x166c}, {0x166f, 0x167f},
    {0x1681, 0x169a}, {0x16a0, 0x16ea}, {0x16ee, 0x1711}, {0x171f, 0x1731}, {0x1740, 0x1751},
    {0x1760, 0x1770}, {0x1780, 0x17b3}, {0x17d7, 0x17d7}, {0x17dc, 0x17dc}, {0x17e0, 0x17f9},
    {0x1810, 0x1884}, {0x1887, 0x18a8}, {0x18aa, 0x191e}, {0x1946, 0x19da}, {0x1a00, 0x1a16},
    {0x1a20, 0x1a54}, {0x1a80, 0x1a99}, {0x1aa7, 0x1aa7}, {0x1b05, 0x1b33}, {0x1b45, 0x1b4c},
    {0x1b50, 0x1b59}, {0x1b83, 0x1ba0}, {0x1bae, 0x1be5}, {0x1c00, 0x1c23}, {0x1c40, 0x1c7d},
    {0x1c80, 0x1cbf}, {0x1ce9, 0x1cec}, {0x1cee, 0x1cf3}, {0x1cf5, 0x1cf6}, {0x1cfa, 0x1dbf},
    {0x1e00, 0x1fbc}, {0x1fbe, 0x1fbe}, {0x1fc2, 0x1fcc}, {0x1fd0, 0x1fdb}, {0x1fe0, 0x1fec},
    {0x1ff2, 0x1ffc}, {0x2070, 0x2079}, {0x207f, 0x2089}, {0x2090, 0x209c}, {0x2102, 0x2102},
    {0x2107, 0x2107}, {0x210a, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211d}, {0x2124, 0x2124},
    {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212a, 0x212d}, {0x212f, 0x2139}, {0x213c, 0x213f},
    {0x2145, 0x2149}, {0x214e, 0x214e}, {0x2150, 0x2189}, {0x2460, 0x249b}, {0x24ea, 0x24ff},
    {0x2776, 0x2793}, {0x2c00, 0x2ce4}, {0x2ceb, 0x2cee}, {0x2cf2, 0x2cf3}, {0x2cfd, 0x2cfd},
    {0x2d00, 0x2d6f}, {0x2d80, 0x2dde}, {0x2e2f, 0x2e2f}, {0x3005, 0x3007}, {0x3021, 0x3029},
    {0x3031, 0x3035}, {0x3038, 0x303c}, {0x3041, 0x3096}, {0x309d, 0x309f}, {0x30a1, 0x30fa},
    {0x30fc, 0x318e}, {0x3192, 0x3195}, {0x31a0, 0x31bf}, {0x31f0, 0x31ff}, {0x3220, 0x3229},
    {0x3248, 0x324f}, {0x3251, 0x325f}, {0x3280, 0x3289}, {0x32b1, 0x32bf}, {0x3400, 0x4dbf},
    {0x4e00, 0xa48c}, {0xa4d0, 0xa4fd}, {0xa500, 0xa60c}, {0xa610, 0xa66e}, {0xa67f, 0xa69d},
    {0xa6a0, 0xa6ef}, {0xa717, 0xa71f}, {0xa722, 0xa788}, {0xa78b, 0xa801}, {0xa803, 0xa805},
    {0xa807, 0xa80a}, {0xa80c, 0xa822}, {0xa830, 0xa835}, {0xa840, 0xa873}, {0xa882, 0xa8b3},
    {0xa8d0, 0xa8d9}, {0xa8f2, 0xa8f7}, {0xa8fb, 0xa8fb}, {0xa8fd, 0xa8fe}, {0xa900, 0xa925},
    {0xa930, 0xa946}, {0xa960, 0xa97c}, {0xa984, 0xa9b2}, {0xa9cf, 0xa9d9}, {0xa9e0, 0xa9e4},
    {0xa9e6, 0xaa28}, {0xaa40, 0xaa42}, {0xaa44, 0xaa4b}, {0xaa50, 0xaa59}, {0xaa60, 0xaa76},
    {0xaa7a, 0xaa7a}, {0xaa7e, 0xaaaf}, {0xaab1, 0xaab1}, {0xaab5, 0xaab6}, {0xaab9, 0xaabd},
    {0xaac0, 0xaac0}, {0xaac2, 0xaadd}, {0xaae0, 0xaaea}, {0xaaf2, 0xaaf4}, {0xab01, 0xab5a},
    {0xab5c, 0xab69}, {0xab70, 0xabe2}, {0xabf0, 0xd7fb}, {0xf900, 0xfb1d}, {0xfb1f, 0xfb28},
    {0xfb2a, 0xfbb1}, {0xfbd3, 0xfd3d}, {0xfd50, 0xfd8f}, {0xfd92, 0xfdc7}, {0xfdf0, 0xfdfb},
    {0xfe70, 0xfefc}, {0xff10, 0xff19}, {0xff21, 0xff3a}, {0xff41, 0xff5a}, {0xff66, 0xffdc},
    {0x10000, 0x100fa}, {0x10107, 0x10133}, {0x10140, 0x10178}, {0x1018a, 0x1018b}, {0x10280, 0x102d0},
    {0x102e1, 0x10375}, {0x10380, 0x1039d}, {0x103a0, 0x103cf}, {0x103d1, 0x10563}, {0x10570, 0x10855},
    {0x10858, 0x10876}, {0x10879, 0x1091b}, {0x10920, 0x10939}, {0x10940, 0x10a00}, {0x10a10, 0x10a35},
    {0x10a40, 0x10a48}, {0x10a60, 0x10a7e}, {0x10a80, 0x10ac7}, {0x10ac9, 0x10ae4}, {0x10aeb, 0x10aef},
    {0x10b00, 0x10b35}, {0x10b40, 0x10b91}, {0x10ba9, 0x10d23}, {0x10d30, 0x10d65}, {0x10d6f, 0x10d85},
    {0x10e60, 0x10ea9}, {0x10eb0, 0x10ec7}, {0x10f00, 0x10f45}, {0x10f51, 0x10f54}, {0x10f70, 0x10f81},
    {0x10fb0, 0x10ff6}, {0x11003, 0x11037}, {0x11052, 0x1106f}, {0x11071, 0x11072}, {0x11075, 0x11075},
    {0x11083, 0x110af}, {0x110d0, 0x110f9}, {0x11103, 0x11126}, {0x11136, 0x1113f}, {0x11144, 0x11144},
    {0x11147, 0x11172}, {0x11176, 0x11176}, {0x11183, 0x111b2}, {0x111c1, 0x111c4}, {0x111d0, 0x111da},
    {0x111dc, 0x111dc}, {0x111e1, 0x1122b}, {0x1123f, 0x11240}, {0x11280, 0x112a8}, {0x112b0, 0x112de},
    {0x112f0, 0x112f9}, {0x11305, 0x11339}, {0x1133d, 0x1133d}, {0x11350, 0x11350}, {0x1135d, 0x11361},
    {0x11380, 0x113b7}, {0x113d1, 0x113d1}, {0x113d3, 0x113d3}, {0x11400, 0x11434}, {0x11447, 0x1144a},
    {0x11450, 0x11459}, {0x1145f, 0x114af}, {0x114c4, 0x114c5}, {0x114c7, 0x115ae}, {0x115d8, 0x115db},
    {0x11600, 0x1162f}, {0x11644, 0x11659}, {0x11680, 0x116aa}, {0x116b8, 0x116b8}, {0x116c0, 0x1171a},
    {0x11730, 0x1173b}, {0x11740, 0x1182b}, {0x118a0, 0x1192f}, {0x1193f, 0x1193f}, {0x11941, 0x11941},
    {0x11950, 0x119d0}, {0x119e1, 0x119e1}, {0x119e3, 0x119e3}, {0x11a00, 0x11a00}, {0x11a0b, 0x11a32},
    {0x11a3a, 0x11a3a}, {0x11a50, 0x11a50}, {0x11a5c, 0x11a89}, {0x11a9d, 0x11a9d}, {0x11ab0, 0x11af8},
    {0x11bc0, 0x11be0}, {0x11bf0, 0x11c2e}, {0x11c40, 0x11c40}, {0x11c50, 0x11c6c}, {0x11c72, 0x11c8f},
    {0x11d00, 0x11d30}, {0x11d46, 0x11d46}, {0x11d50, 0x11d89}, {0x11d98, 0x11ef2}, {0x11f02, 0x11f02},
    {0x11f04, 0x11f33}, {0x11f50, 0x11f59}, {0x11fb0, 0x11fd4}, {0x12000, 0x1246e}, {0x12480, 0x12ff0},
    {0x13000, 0x1342f}, {0x13441, 0x13446}, {0x13460, 0x1611d}, {0x16130, 0x16a69}, {0x16a70, 0x16aed},
    {0x16b00, 0x16b2f}, {0x16b40, 0x16b43}, {0x16b50, 0x16d6c}, {0x16d70, 0x16e96}, {0x16ea0, 0x16f4a},
    {0x16f50, 0x16f50}, {0x16f93, 0x16fe1}, {0x16fe3, 0x16fe3}, {0x16ff2, 0x1bc99}, {0x1ccf0, 0x1ccf9},
    {0x1d2c0, 0x1d2f3}, {0x1d360, 0x1d6c0}, {0x1d6c2, 0x1d6da}, {0x1d6dc, 0x1d6fa}, {0x1d6fc, 0x1d714},
    {0x1d716, 0x1d734}, {0x1d736, 0x1d74e}, {0x1d750, 0x1d76e}, {0x1d770, 0x1d788}, {0x1d78a, 0x1d7a8},
    {0x1d7aa, 0x1d7c2}, {0x1d7c4, 0x1d7ff}, {0x1df00, 0x1df2a}, {0x1e030, 0x1e06d}, {0x1e100, 0x1e12c},
    {0x1e137, 0x1e14e}, {0x1e290, 0x1e2ad}, {0x1e2c0, 0x1e2eb}, {0x1e2f0, 0x1e2f9}, {0x1e4d0, 0x1e4eb},
    {0x1e4f0, 0x1e5ed}, {0x1e5f0, 0x1e5fa}, {0x1e6c0, 0x1e6e2}, {0x1e6e4, 0x1e6e5}, {0x1e6e7, 0x1e6ed},
    {0x1e6f0, 0x1e6f4}, {0x1e6fe, 0x1e8cf}, {0x1e900, 0x1e943}, {0x1e94b, 0x1e959}, {0x1ec71, 0x1ecab},
    {0x1ecad, 0x1ecaf}, {0x1ecb1, 0x1ed2d}, {0x1ed2f, 0x1eebb}, {0x1f100, 0x1f10c}, {0x1fbf0, 0x1fbf9},
    {0x20000, 0x33479},
};
static const lower_run lower_runs[] = {
    {0xc0, 0xd6, 32, 1}, {0xd8, 0xde, 32, 1}, {0x100, 0x12e, 1, 2}, {0x132, 0x136, 1, 2},
    {0x139, 0x147, 1, 2}, {0x14a, 0x176, 1, 2}, {0x178, 0x178, -121, 1}, {0x179, 0x17d, 1, 2},
    {0x181, 0x181, 210, 1}, {0x182, 0x184, 1, 2}, {0x186, 0x186, 206, 1}, {0x187, 0x187, 1, 1},
    {0x189, 0x18a, 205, 1}, {0x18b, 0x18b, 1, 1}, {0x18e, 0x18e, 79, 1}, {0x18f, 0x18f, 202, 1},
    {0x190, 0x190, 203, 1}, {0x191, 0x191, 1, 1}, {0x193, 0x193, 205, 1}, {0x194, 0x194, 207, 1},
    {0x196, 0x196, 211, 1}, {0x197, 0x197, 209, 1}, {0x198, 0x198, 1, 1}, {0x19c, 0x19c, 211, 1},
    {0x19d, 0x19d, 213, 1}, {0x19f, 0x19f, 214, 1}, {0x1a0, 0x1a4, 1, 2}, {0x1a6, 0x1a6, 218, 1},
    {0x1a7, 0x1a7, 1, 1}, {0x1a9, 0x1a9, 218, 1}, {0x1ac, 0x1ac, 1, 1}, {0x1ae, 0x1ae, 218, 1},
    {0x1af, 0x1af, 1, 1}, {0x1b1, 0x1b2, 217, 1}, {0x1b3, 0x1b5, 1, 2}, {0x1b7, 0x1b7, 219, 1},
    {0x1b8, 0x1b8, 1, 1}, {0x1bc, 0x1bc, 1, 1}, {0x1c4, 0x1c4, 2, 1}, {0x1c5, 0x1c5, 1, 1},
    {0x1c7, 0x1c7, 2, 1}, {0x1c8, 0x1c8, 1, 1}, {0x1ca, 0x1ca, 2, 1}, {0x1cb, 0x1db, 1, 2},
    {0x1de, 0x1ee, 1, 2}, {0x1f1, 0x1f1, 2, 1}, {0x1f2, 0x1f4, 1, 2}, {0x1f6, 0x1f6, -97, 1},
    {0x1f7, 0x1f7, -56, 1}, {0x1f8, 0x21e, 1, 2}, {0x220, 0x220, -130, 1}, {0x222, 0x232, 1, 2},
    {0x23a, 0x23a, 10795, 1}, {0x23b, 0x23b, 1, 1}, {0x23d, 0x23d, -163, 1}, {0x23e, 0x23e, 10792, 1},
    {0x241, 0x241, 1, 1}, {0x243, 0x243, -195, 1}, {0x244, 0x244, 69, 1}, {0x245, 0x245, 71, 1},
    {0x246, 0x24e, 1, 2}, {0x370, 0x372, 1, 2}, {0x376, 0x376, 1, 1}, {0x37f, 0x37f, 116, 1},
    {0x386, 0x386, 38, 1}, {0x388, 0x38a, 37, 1}, {0x38c, 0x38c, 64, 1}, {0x38e, 0x38f, 63, 1},
    {0x391, 0x3a1, 32, 1}, {0x3a3, 0x3ab, 32, 1}, {0x3cf, 0x3cf, 8, 1}, {0x3d8, 0x3ee, 1, 2},
    {0x3f4, 0x3f4, -60, 1}, {0x3f7, 0x3f7, 1, 1}, {0x3f9, 0x3f9, -7, 1}, {0x3fa, 0x3fa, 1, 1},
    {0x3fd, 0x3ff, -130, 1}, {0x400, 0x40f, 80, 1}, {0x410, 0x42f, 32, 1}, {0x460, 0x480, 1, 2},
    {0x48a, 0x4be, 1, 2}, {0x4c0, 0x4c0, 15, 1}, {0x4c1, 0x4cd, 1, 2}, {0x4d0, 0x52e, 1, 2},
    {0x531, 0x556, 48, 1}, {0x10a0, 0x10c5, 7264, 1}, {0x10c7, 0x10c7, 7264, 1}, {0x10cd, 0x10cd, 7264, 1},
    {0x13a0, 0x13ef, 38864, 1}, {0x13f0, 0x13f5, 8, 1}, {0x1c89, 0x1c89, 1, 1}, {0x1c90, 0x1cba, -3008, 1},
    {0x1cbd, 0x1cbf, -3008, 1}, {0x1e00, 0x1e94, 1, 2}, {0x1e9e, 0x1e9e, -7615, 1}, {0x1ea0, 0x1efe, 1, 2},
    {0x1f08, 0x1f0f, -8, 1}, {0x1f18, 0x1f1d, -8, 1}, {0x1f28, 0x1f2f, -8, 1}, {0x1f38, 0x1f3f, -8, 1},
    {0x1f48, 0x1f4d, -8, 1}, {0x1f59, 0x1f5f, -8, 2}, {0x1f68, 0x1f6f, -8, 1}, {0x1f88, 0x1f8f, -8, 1},
    {0x1f98, 0x1f9f, -8, 1}, {0x1fa8, 0x1faf, -8, 1}, {0x1fb8, 0x1fb9, -8, 1}, {0x1fba, 0x1fbb, -74, 1},
    {0x1fbc, 0x1fbc, -9, 1}, {0x1fc8, 0x1fcb, -86, 1}, {0x1fcc, 0x1fcc, -9, 1}, {0x1fd8, 0x1fd9, -8, 1},
    {0x1fda, 0x1fdb, -100, 1}, {0x1fe8, 0x1fe9, -8, 1}, {0x1fea, 0x1feb, -112, 1}, {0x1fec, 0x1fec, -7, 1},
    {0x1ff8, 0x1ff9, -128, 1}, {0x1ffa, 0x1ffb, -126, 1}, {0x1ffc, 0x1ffc, -9, 1}, {0x2126, 0x2126, -7517, 1},
    {0x212a, 0x212a, -8383, 1}, {0x212b, 0x212b, -8262, 1}, {0x2132, 0x2132, 28, 1}, {0x2160, 0x216f, 16, 1},
    {0x2183, 0x2183, 1, 1}, {0x24b6, 0x24cf, 26, 1}, {0x2c00, 0x2c2f, 48, 1}, {0x2c60, 0x2c60, 1, 1},
    {0x2c62, 0x2c62, -10743, 1}, {0x2c63, 0x2c63, -3814, 1}, {0x2c64, 0x2c64, -10727, 1},
    {0x2c67, 0x2c6b, 1, 2}, {0x2c6d, 0x2c6d, -10780, 1}, {0x2c6e, 0x2c6e, -10749, 1},
    {0x2c6f, 0x2c6f, -10783, 1}, {0x2c70, 0x2c70, -10782, 1}, {0x2c72, 0x2c72, 1, 1}, {0x2c75, 0x2c75, 1, 1},
    {0x2c7e, 0x2c7f, -10815, 1}, {0x2c80, 0x2ce2, 1, 2}, {0x2ceb, 0x2ced, 1, 2}, {0x2cf2, 0x2cf2, 1, 1},
    {0xa640, 0xa66c, 1, 2}, {0xa680, 0xa69a, 1, 2}, {0xa722, 0xa72e, 1, 2}, {0xa732, 0xa76e, 1, 2},
    {0xa779, 0xa77b, 1, 2}, {0xa77d, 0xa77d, -35332, 1}, {0xa77e, 0xa786, 1, 2}, {0xa78b, 0xa78b, 1, 1},
    {0xa78d, 0xa78d, -42280, 1}, {0xa790, 0xa792, 1, 2}, {0xa796, 0xa7a8, 1, 2}, {0xa7aa, 0xa7aa, -42308, 1},
    {0xa7ab, 0xa7ab, -42319, 1}, {0xa7ac, 0xa7ac, -42315, 1}, {0xa7ad, 0xa7ad, -42305, 1},
    {0xa7ae, 0xa7ae, -42308, 1}, {0xa7b0, 0xa7b0, -42258, 1}, {0xa7b1, 0xa7b1, -42282, 1},
    {0xa7b2, 0xa7b2, -42261, 1}, {0xa7b3, 0xa7b3, 928, 1}, {0xa7b4, 0xa7c2, 1, 2}, {0xa7c4, 0xa7c4, -48, 1},
    {0xa7c5, 0xa7c5, -42307, 1}, {0xa7c6, 0xa7c6, -35384, 1}, {0xa7c7, 0xa7c9, 1, 2},
    {0xa7cb, 0xa7cb, -42343, 1}, {0xa7cc, 0xa7da, 1, 2}, {0xa7dc, 0xa7dc, -42561, 1}, {0xa7f5, 0xa7f5, 1, 1},
    {0xff21, 0xff3a, 32, 1}, {0x10400, 0x10427, 40, 1}, {0x104b0, 0x104d3, 40, 1}, {0x10570, 0x1057a, 39, 1},
    {0x1057c, 0x1058a, 39, 1}, {0x1058c, 0x10592, 39, 1}, {0x10594, 0x10595, 39, 1},
    {0x10c80, 0x10cb2, 64, 1}, {0x10d50, 0x10d65, 32, 1}, {0x118a0, 0x118bf, 32, 1},
    {0x16e40, 0x16e5f, 32, 1}, {0x16ea0, 0x16eb8, 27, 1}, {0x1e900, 0x1e921, 34, 1},
};
/* clang-format on */

static const char *const days[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                   "Friday", "Saturday", "Sunday"};
/* Object.values(LANGS) of common.js, in its order */
static const char *const languages[] = {"English", "French", "German",   "Spanish", "Italian", "Portuguese",
                                        "Dutch",   "Polish", "Japanese", "Arabic",  "Turkish", "Swedish"};

struct edge_scorer {
    char **names; /* brands of 3 or more UTF-16 units, then cities of 4 or more, in vocab.json's order */
    int n_names;
};

/* ---------------------------------------------------------------- UTF-8 and Unicode */

/* The code point at s (NUL-terminated, not at its end) and its length in bytes; an invalid byte
 * is U+FFFD of length 1, as in node's decoder (which never swallows the byte after it). */
static uint32_t utf8_decode(const char *s, int *len) {
    const unsigned char *u = (const unsigned char *)s;
    *len = 1;
    if (u[0] < 0x80) return u[0];
    int n;
    unsigned lo = 0x80, hi = 0xbf; /* the second byte's range rules out overlongs, surrogates, > U+10FFFF */
    if (u[0] >= 0xc2 && u[0] <= 0xdf)
        n = 1;
    else if (u[0] >= 0xe0 && u[0] <= 0xef)
        n = 2, lo = u[0] == 0xe0 ? 0xa0 : 0x80, hi = u[0] == 0xed ? 0x9f : 0xbf;
    else if (u[0] >= 0xf0 && u[0] <= 0xf4)
        n = 3, lo = u[0] == 0xf0 ? 0x90 : 0x80, hi = u[0] == 0xf4 ? 0x8f : 0xbf;
    else
        return 0xfffd;
    if (u[1] < lo || u[1] > hi) return 0xfffd;
    uint32_t c = u[0] & (0x3fu >> n);
    for (int i = 1; i <= n; i++) {
        if (i > 1 && (u[i] & 0xc0) != 0x80) return 0xfffd;
        c = c << 6 | (u[i] & 0x3f);
    }
    *len = n + 1;
    return c;
}

static void utf8_put(ng_buf *b, uint32_t c) {
    static const unsigned char lead[5] = {0, 0, 0xc0, 0xe0, 0xf0};
    char s[4];
    int n = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    for (int i = n - 1; i > 0; i--, c >>= 6) s[i] = (char)(0x80 | (c & 0x3f));
    s[0] = (char)(lead[n] | c);
    ng_buf_add(b, s, (size_t)n);
}

/* The code point before p in s, -1 at the start of s; U+FFFD when the bytes before p are no
 * complete UTF-8 sequence. p is not inside a sequence. */
static int64_t cp_before(const char *s, const char *p) {
    if (p == s) return -1;
    for (int k = 1; k <= 4 && p - k >= s; k++) {
        if (((unsigned char)p[-k] & 0xc0) == 0x80) continue; /* a continuation byte: step back further */
        int len;
        uint32_t c = utf8_decode(p - k, &len);
        return len == k ? c : 0xfffd;
    }
    return 0xfffd;
}

/* \p{L} or \p{N} */
static int is_letter_number(int64_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    size_t lo = 0, hi = sizeof ln_ranges / sizeof ln_ranges[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < ln_ranges[mid][0])
            hi = mid;
        else if (c > ln_ranges[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

static uint32_t lower_cp(uint32_t c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
    size_t lo = 0, hi = sizeof lower_runs / sizeof lower_runs[0]; /* the last run with first <= c */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (c < lower_runs[mid].first)
            hi = mid;
        else
            lo = mid;
    }
    const lower_run *r = &lower_runs[lo];
    if (c >= r->first && c <= r->last && (c - r->first) % r->stride == 0)
        return (uint32_t)((int32_t)c + r->delta);
    return c;
}

/* s.toLowerCase(), malloc'd; invalid bytes are copied. */
static char *js_lower(const char *s) {
    ng_buf b;
    ng_buf_init(&b);
    for (const char *p = s; *p;) {
        int len;
        uint32_t c = utf8_decode(p, &len), l = lower_cp(c);
        if (c == 0x130)
            ng_buf_puts(&b, "i\xcc\x87"); /* İ -> i + combining dot above */
        else if (l == c)
            ng_buf_add(&b, p, (size_t)len);
        else
            utf8_put(&b, l);
        p += len;
    }
    return b.s;
}

/* s.length in JS: UTF-16 units */
static size_t utf16_len(const char *s) {
    size_t n = 0;
    for (int len; *s; s += len) n += utf8_decode(s, &len) >= 0x10000 ? 2 : 1;
    return n;
}

/* ---------------------------------------------------------------- the patterns */

/* s.split(sep).join(' '): consumes s, returns a malloc'd string. An empty sep splits between
 * characters (JS splits between UTF-16 units; the two differ only outside the BMP). */
static char *split_join(char *s, const char *sep) {
    size_t n = strlen(sep);
    ng_buf b;
    ng_buf_init(&b);
    if (n == 0) {
        for (const char *p = s; *p;) {
            int len;
            utf8_decode(p, &len);
            if (p != s) ng_buf_add(&b, " ", 1);
            ng_buf_add(&b, p, (size_t)len);
            p += len;
        }
    } else {
        const char *p = s;
        for (const char *q; (q = strstr(p, sep)); p = q + n) {
            ng_buf_add(&b, p, (size_t)(q - p));
            ng_buf_add(&b, " ", 1);
        }
        ng_buf_puts(&b, p);
    }
    free(s);
    return b.s;
}

/* \w and \d without the 'u' flag; bytes of multi-byte characters are neither */
static int is_word(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* /\b\d+(?:\.\d)? ?(?:m|km)\b/ at t + p: the match's length or 0, alternatives tried in the
 * regex's backtracking order. \d+ never gives digits back: a shorter run would be followed by a
 * digit, which nothing after it accepts. */
static size_t distance_at(const char *t, size_t p) {
    const unsigned char *u = (const unsigned char *)t;
    if (!is_digit(u[p]) || (p > 0 && is_word(u[p - 1]))) return 0;
    size_t q = p, after[2], n_after = 0;
    while (is_digit(u[q])) q++;
    if (u[q] == '.' && is_digit(u[q + 1])) after[n_after++] = q + 2; /* (?:\.\d)? taken, then not */
    after[n_after++] = q;
    for (size_t i = 0; i < n_after; i++) {
        for (int sp = u[after[i]] == ' '; sp >= 0; sp--) { /* ' ?' taken, then not */
            size_t s = after[i] + (size_t)sp;
            size_t e = u[s] == 'm' ? s + 1 : u[s] == 'k' && u[s + 1] == 'm' ? s + 2 : 0;
            if (e && !is_word(u[e])) return e - p;
        }
    }
    return 0;
}

/* /\b\d{1,2}:\d{2}\b/ at t + p: the match's length or 0 */
static size_t time_at(const char *t, size_t p) {
    const unsigned char *u = (const unsigned char *)t;
    if (!is_digit(u[p]) || (p > 0 && is_word(u[p - 1]))) return 0;
    for (size_t h = 2; h >= 1; h--) {
        if (h == 2 && !is_digit(u[p + 1])) continue;
        size_t c = p + h;
        if (u[c] == ':' && is_digit(u[c + 1]) && is_digit(u[c + 2]) && !is_word(u[c + 3])) return c + 3 - p;
    }
    return 0;
}

/* matches of /\bW\b/g in t, for a word w of ASCII letters */
static long count_words(const char *t, const char *w) {
    size_t n = strlen(w);
    long k = 0;
    for (const char *p = t; (p = strstr(p, w));) {
        if ((p == t || !is_word((unsigned char)p[-1])) && !is_word((unsigned char)p[n]))
            k++, p += n;
        else
            p++;
    }
    return k;
}

/* reWord(name).test(t): name occurs in t with no letter or number right before or after it */
static int has_name(const char *t, const char *name) {
    size_t n = strlen(name);
    for (const char *p = strstr(t, name); p; p = strstr(p + 1, name)) {
        int len;
        int64_t after = p[n] ? (int64_t)utf8_decode(p + n, &len) : -1;
        if (!is_letter_number(cp_before(t, p)) && !is_letter_number(after)) return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- the scorer */

edge_scorer *edge_scorer_load(const char *vocab_path, ng_error *err) {
    size_t len;
    char *text = ng_read_file(vocab_path, &len, err);
    if (!text) return NULL;
    cJSON *js = cJSON_Parse(text);
    free(text);
    const char *keys[2] = {"brands", "cities"};
    const size_t min_len[2] = {3, 4}; /* vocab.brands.filter((b) => b.length >= 3), cities >= 4 */
    const cJSON *lists[2];
    for (int k = 0; k < 2; k++) {
        lists[k] = cJSON_GetObjectItemCaseSensitive(js, keys[k]);
        if (!cJSON_IsArray(lists[k])) {
            ng_error_set(err, "%s: needs a JSON object with an array \"%s\"", vocab_path, keys[k]);
            cJSON_Delete(js);
            return NULL;
        }
    }
    edge_scorer *s = xcalloc(1, sizeof *s);
    s->names =
        xcalloc((size_t)(cJSON_GetArraySize(lists[0]) + cJSON_GetArraySize(lists[1])), sizeof *s->names);
    for (int k = 0; k < 2; k++) {
        const cJSON *it;
        cJSON_ArrayForEach(it, lists[k]) {
            if (!cJSON_IsString(it)) {
                ng_error_set(err, "%s: \"%s\" holds something other than a string", vocab_path, keys[k]);
                cJSON_Delete(js);
                edge_scorer_free(s);
                return NULL;
            }
            if (utf16_len(it->valuestring) >= min_len[k]) s->names[s->n_names++] = xstrdup(it->valuestring);
        }
    }
    cJSON_Delete(js);
    return s;
}

void edge_scorer_free(edge_scorer *s) {
    if (!s) return;
    for (int i = 0; i < s->n_names; i++) free(s->names[i]);
    free(s->names);
    free(s);
}

static const char *str_item(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* What the scoring reads of a record must be there: facts with a type and a value (a POI: a name
 * and a distance), private entries with a value; all strings. */
static int record_check(const cJSON *rec, ng_error *err) {
    const cJSON *facts = cJSON_GetObjectItemCaseSensitive(rec, "facts");
    const cJSON *priv = cJSON_GetObjectItemCaseSensitive(rec, "private");
    if (!cJSON_IsObject(rec) || !cJSON_IsArray(facts) || !cJSON_IsArray(priv))
        return ng_error_set(err, "facts line: needs a JSON object with arrays \"facts\" and \"private\"");
    const cJSON *f;
    int i = 0;
    cJSON_ArrayForEach(f, facts) {
        const char *type = str_item(f, "type");
        if (!type) return ng_error_set(err, "facts line: fact %d has no string \"type\"", i);
        int poi = !strcmp(type, "poi");
        if (poi ? !str_item(f, "name") || !str_item(f, "distance") : !str_item(f, "value"))
            return ng_error_set(err, "facts line: fact %d (%.40s) needs %s", i, type,
                                poi ? "strings \"name\" and \"distance\"" : "a string \"value\"");
        i++;
    }
    i = 0;
    cJSON_ArrayForEach(f, priv) {
        if (!str_item(f, "value"))
            return ng_error_set(err, "facts line: private entry %d has no string \"value\"", i);
        i++;
    }
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(rec, "request"), *asks = cJSON_GetObjectItemCaseSensitive(req, "asks");
    if (req && !cJSON_IsNull(req)) {
        int ok = cJSON_IsObject(req) && str_item(req, "concise") && cJSON_IsArray(asks);
        cJSON_ArrayForEach(f, asks) ok &= cJSON_IsString(f);
        if (!ok) return ng_error_set(err, "facts line: \"request\" needs a string \"concise\" and an array of strings \"asks\"");
    }
    return NG_OK;
}

/* rec.request: [concise, ...asks].filter(Boolean).some((a) => lower.includes(a.toLowerCase())) */
static int request_stated(const cJSON *req, const char *text) {
    char *lower = js_lower(text);
    const char *concise = str_item(req, "concise");
    int said = 0;
    if (concise[0]) {
        char *l = js_lower(concise);
        said = strstr(lower, l) != NULL;
        free(l);
    }
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(req, "asks")) {
        if (said || !a->valuestring[0]) continue;
        char *l = js_lower(a->valuestring);
        said = strstr(lower, l) != NULL;
        free(l);
    }
    free(lower);
    return said;
}

/* new Set(): insertion order, no repeats */
typedef struct {
    const char **v;
    int n;
} str_set;

static int set_has(const str_set *s, const char *x) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], x)) return 1;
    return 0;
}
static void set_add(str_set *s, const char *x) {
    if (!set_has(s, x)) s->v[s->n++] = x;
}

typedef struct {
    str_set dist, time, day, lang, names;
} allowed_sets;

/* The facts' count, how many text states, and what the context allows text to mention. */
static void score_facts(const cJSON *facts, const char *text, allowed_sets *a, long *n_facts, long *stated) {
    char *lower = js_lower(text);
    const cJSON *f;
    cJSON_ArrayForEach(f, facts) {
        const char *type = str_item(f, "type");
        (*n_facts)++;
        if (!strcmp(type, "poi")) {
            /* allowed.dist.add(f.distance); allowed.names.add(f.name);
               if (text.includes(f.name) && text.includes(f.distance)) stated++; */
            const char *name = str_item(f, "name"), *dist = str_item(f, "distance");
            set_add(&a->dist, dist), set_add(&a->names, name);
            *stated += strstr(text, name) && strstr(text, dist);
            continue;
        }
        const char *v = str_item(f, "value");
        if (!strcmp(type, "time")) set_add(&a->time, v);
        if (!strcmp(type, "day")) set_add(&a->day, v);
        if (!strcmp(type, "language")) set_add(&a->lang, v);
        if (!strcmp(type, "place") || !strcmp(type, "country")) set_add(&a->names, v);
        /* lower.includes(String(f.value).toLowerCase()) */
        char *lv = js_lower(v);
        *stated += strstr(lower, lv) != NULL;
        free(lv);
    }
    free(lower);
}

/* Mentions in text and how many of them are invented. */
static void score_mentions(const edge_scorer *s, const char *text, allowed_sets *a, long *men, long *inv) {
    /* bare: text without the allowed names (POIs, place), longest first (a stable sort on the
       JS length), so that a brand or city inside one of them is no mention */
    for (int i = 1; i < a->names.n; i++) {
        const char *x = a->names.v[i];
        size_t lx = utf16_len(x);
        int j = i;
        for (; j > 0 && utf16_len(a->names.v[j - 1]) < lx; j--) a->names.v[j] = a->names.v[j - 1];
        a->names.v[j] = x;
    }
    char *bare = xstrdup(text);
    for (int i = 0; i < a->names.n; i++) bare = split_join(bare, a->names.v[i]);

    /* count(/\b\d+(?:\.\d)? ?(?:m|km)\b/g, (s) => allowed.dist.has(s.replace(/(\d)(m|km)$/, '$1 $2'))) */
    for (size_t p = 0; text[p];) {
        size_t n = distance_at(text, p);
        if (!n) {
            p++;
            continue;
        }
        size_t unit = text[p + n - 2] == 'k' ? 2 : 1, num = n - unit; /* "850m": "850", "m" */
        ng_buf d;
        ng_buf_init(&d);
        ng_buf_add(&d, text + p, num);
        if (text[p + num - 1] != ' ') ng_buf_add(&d, " ", 1);
        ng_buf_add(&d, text + p + num, unit);
        (*men)++, *inv += !set_has(&a->dist, d.s);
        free(d.s);
        p += n;
    }
    /* count(/\b\d{1,2}:\d{2}\b/g, (s) => allowed.time.has(s)) */
    for (size_t p = 0; text[p];) {
        size_t n = time_at(text, p);
        if (!n) {
            p++;
            continue;
        }
        char t[8];
        snprintf(t, sizeof t, "%.*s", (int)n, text + p);
        (*men)++, *inv += !set_has(&a->time, t);
        p += n;
    }
    /* for (const d of C.DAYS) count(new RegExp(`\\b${d}\\b`, 'g'), () => allowed.day.has(d) ||
       !bare.includes(d)), and the same for the language names */
    for (int k = 0; k < 2; k++) {
        const char *const *words = k ? languages : days;
        const str_set *ok = k ? &a->lang : &a->day;
        int n_words = k ? (int)(sizeof languages / sizeof *languages) : (int)(sizeof days / sizeof *days);
        for (int i = 0; i < n_words; i++) {
            long m = count_words(text, words[i]);
            *men += m;
            if (m && !set_has(ok, words[i]) && strstr(bare, words[i])) *inv += m;
        }
    }
    /* for (const [b, re] of brandRe) if (re.test(bare)) { men++; inv++; }, and the cities */
    for (int i = 0; i < s->n_names; i++)
        if (has_name(bare, s->names[i])) (*men)++, (*inv)++;
    /* men += [...allowed.names].filter((n) => text.includes(n)).length */
    for (int i = 0; i < a->names.n; i++) *men += strstr(text, a->names.v[i]) != NULL;
    free(bare);
}

/* rec.private.some((p) => noPlace.includes(p.value)), noPlace being text without the place and
   country values (in the facts' order) */
static int leaks(const cJSON *facts, const cJSON *priv, const char *text) {
    char *rest = xstrdup(text);
    const cJSON *f;
    cJSON_ArrayForEach(f, facts) {
        const char *type = str_item(f, "type");
        if (!strcmp(type, "place") || !strcmp(type, "country")) rest = split_join(rest, str_item(f, "value"));
    }
    int leak = 0;
    cJSON_ArrayForEach(f, priv) leak |= strstr(rest, str_item(f, "value")) != NULL;
    free(rest);
    return leak;
}

int edge_score_add(const edge_scorer *s, const char *facts_line, const char *output, edge_score *acc,
                   ng_error *err) {
    cJSON *rec = cJSON_Parse(facts_line);
    if (record_check(rec, err)) {
        cJSON_Delete(rec);
        return NG_ERR;
    }
    const char *text = output ? output : ""; /* (preds[i] && preds[i].output) || '' */
    const cJSON *facts = cJSON_GetObjectItemCaseSensitive(rec, "facts");
    const cJSON *priv = cJSON_GetObjectItemCaseSensitive(rec, "private");
    size_t n = (size_t)cJSON_GetArraySize(facts);
    const char **slots = xcalloc(5 * n + 1, sizeof *slots); /* each set holds at most one entry per fact */
    allowed_sets a = {{slots, 0}, {slots + n, 0}, {slots + 2 * n, 0}, {slots + 3 * n, 0}, {slots + 4 * n, 0}};
    long n_facts = 0, stated = 0, men = 0, inv = 0;
    score_facts(facts, text, &a, &n_facts, &stated);
    score_mentions(s, text, &a, &men, &inv);
    acc->records++;
    acc->facts += n_facts;
    acc->stated += stated;
    acc->mentions += men;
    acc->invented += inv;
    acc->records_with_invented += inv > 0;
    acc->leaks += leaks(facts, priv, text);
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(rec, "request");
    if (req && !cJSON_IsNull(req)) acc->requests++, acc->requests_stated += request_stated(req, text);
    free(slots);
    cJSON_Delete(rec);
    return NG_OK;
}

"""Identities for holdout cards, drawn independently of the main generator's: own names, regions, dates."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from raypipe.tasks.idcard.fields import ETHNICITIES, id_check_digit
from raypipe.tasks.idcard.schema import identity_truth

# Characters of the labels (姓名 性别 民族 出生 住址 公民身份号码), 男/女 and 年月日 never appear in a
# name, so that a name cannot be read as a label or a date. Most surnames and given-name characters here
# are ones the main generator never draws; a few very common surnames stay, as on real cards.
SINGLE_SURNAMES: tuple[str, ...] = tuple(
    "岑晏聂嵇蔺滕詹仇芮裘栾喻佟桑岳甄卞覃阮麦茅鲍翟储闵戚牛祁符邬寇巫蓝廉殷柏倪骆辛苟季"
    "柴单庞虞柯管鄢荣车冉阎凌欧包费薄晋施葛乔温"
)
COMMON_SURNAMES: tuple[str, ...] = tuple("王李张刘陈")
COMPOUND_SURNAMES: tuple[str, ...] = (
    "上官",
    "皇甫",
    "东方",
    "端木",
    "慕容",
    "令狐",
    "尉迟",
    "宇文",
    "澹台",
    "夏侯",
)
GIVEN_CHARS: tuple[str, ...] = tuple(
    "蔚珂漪翊骁瑾湘璇茗砚澄岚钰骞沁舒棠奕黛珏霖晗墨筠璐昕韬毓菁琰炜煜烨灏珩琛曦蕾蓓芷苒荷薇蔓"
    "鸿麟骏驰逸翰朔澜渊潇泓溪淼森杉桐榆槿桦松竹岩崇峻巍锋铭钧锦璋琨瑶璟谦诚谨恺悠恬忆念慈惠宛宸"
)
# Shares of surname kinds; the rest are rare single surnames.
COMMON_SHARE, COMPOUND_SHARE = 0.2, 0.12
# (administrative division code, the address prefix it stands for): none of the main generator's codes.
REGIONS: tuple[tuple[str, str], ...] = (
    ("130102", "河北省石家庄市长安区"),
    ("140105", "山西省太原市小店区"),
    ("150102", "内蒙古自治区呼和浩特市新城区"),
    ("210102", "辽宁省沈阳市和平区"),
    ("220102", "吉林省长春市南关区"),
    ("340104", "安徽省合肥市蜀山区"),
    ("360102", "江西省南昌市东湖区"),
    ("460105", "海南省海口市秀英区"),
    ("520102", "贵州省贵阳市南明区"),
    ("540102", "西藏自治区拉萨市城关区"),
    ("620102", "甘肃省兰州市城关区"),
    ("630102", "青海省西宁市城东区"),
    ("440304", "广东省深圳市福田区"),
    ("330203", "浙江省宁波市海曙区"),
    ("370202", "山东省青岛市市南区"),
    ("320583", "江苏省昆山市"),
    ("522601", "贵州省凯里市"),
    ("532801", "云南省景洪市"),
    ("652801", "新疆维吾尔自治区库尔勒市"),
    ("513401", "四川省西昌市"),
    ("433101", "湖南省吉首市"),
)
TOWNS: tuple[str, ...] = ("城关镇", "青石镇", "桃源乡", "河口镇", "柳林乡", "白沙镇", "龙泉镇", "安宁乡")
VILLAGES: tuple[str, ...] = ("新村", "上坝村", "杨柳村", "石桥村", "东岭村", "水磨村", "花溪村")
ROADS: tuple[str, ...] = (
    "人和街",
    "丰收路",
    "迎宾大道",
    "北环路",
    "育才巷",
    "翠湖路",
    "金沙江路",
    "望江街",
    "桂花巷",
)
ESTATES: tuple[str, ...] = ("锦绣花园", "阳光小区", "金桂苑", "碧水湾", "翠竹园", "丽景华庭")
# Births span the course assertion's whole 1900-2025 range: mostly 1940-2010, with both tails represented.
BIRTH_SPANS: tuple[tuple[dt.date, dt.date, float], ...] = (
    (dt.date(1900, 1, 1), dt.date(1939, 12, 31), 0.15),
    (dt.date(1940, 1, 1), dt.date(2010, 12, 31), 0.7),
    (dt.date(2011, 1, 1), dt.date(2025, 12, 31), 0.15),
)
HAN_SHARE = 0.3  # the rest is uniform over all 56 groups, so every group appears in a few hundred cards


@dataclass(frozen=True)
class HoldoutIdentity:
    """What the front of one holdout card says."""

    name: str
    sex: str
    ethnicity: str
    birth: dt.date
    address: str
    id_number: str

    def truth(self) -> dict[str, str]:
        """The truth fields of the canonical schema (birth_date as YYYY-MM-DD)."""
        return identity_truth(self)


def draw_holdout_identity(rng: np.random.Generator) -> HoldoutIdentity:
    """A random identity: 2-4 character names, 1900-2025 births, all 56 ethnic groups, a valid ID number."""
    sex = "男" if rng.random() < 0.5 else "女"
    birth = _draw_birth(rng)
    region_code, region = REGIONS[int(rng.integers(len(REGIONS)))]
    return HoldoutIdentity(
        name=_draw_name(rng),
        sex=sex,
        ethnicity=_draw_ethnicity(rng),
        birth=birth,
        address=region + _draw_locality(rng),
        id_number=holdout_id_number(region_code, birth, int(rng.integers(0, 100)), sex),
    )


def holdout_id_number(region_code: str, birth: dt.date, station: int, sex: str) -> str:
    """Region + YYYYMMDD + 2-digit station + a sex digit (odd: male, even: female) + MOD 11-2 check."""
    if len(region_code) != 6 or not region_code.isdigit() or not 0 <= station <= 99:
        raise ValueError(f"need a 6-digit region code and a station 0-99, got {region_code!r}, {station}")
    sex_digit = (2 * station + 1) % 10 if sex == "男" else (2 * station) % 10
    first17 = f"{region_code}{birth:%Y%m%d}{station:02d}{sex_digit}"
    return first17 + id_check_digit(first17)


def _draw_birth(rng: np.random.Generator) -> dt.date:
    shares = np.array([share for _, _, share in BIRTH_SPANS])
    first, last, _ = BIRTH_SPANS[int(rng.choice(len(BIRTH_SPANS), p=shares / shares.sum()))]
    return first + dt.timedelta(days=int(rng.integers(0, (last - first).days + 1)))


def _draw_name(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < COMPOUND_SHARE:
        surname = COMPOUND_SURNAMES[int(rng.integers(len(COMPOUND_SURNAMES)))]
        given_length = int(rng.integers(1, 3))  # 3-4 characters in all
    else:
        pool = COMMON_SURNAMES if kind < COMPOUND_SHARE + COMMON_SHARE else SINGLE_SURNAMES
        surname = pool[int(rng.integers(len(pool)))]
        given_length = int(rng.choice([1, 2, 3], p=[0.3, 0.6, 0.1]))  # 2-4 characters in all
    given = rng.choice(len(GIVEN_CHARS), size=given_length, replace=False)
    return surname + "".join(GIVEN_CHARS[int(i)] for i in given)


def _draw_ethnicity(rng: np.random.Generator) -> str:
    if rng.random() < HAN_SHARE:
        return "汉"
    return ETHNICITIES[int(rng.integers(len(ETHNICITIES)))]


def _draw_locality(rng: np.random.Generator) -> str:
    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    style = int(rng.integers(3))
    if style == 0:
        return f"{pick(TOWNS)}{pick(VILLAGES)}{int(rng.integers(1, 13))}组{int(rng.integers(1, 90))}号"
    if style == 1:
        return f"{pick(ROADS)}{int(rng.integers(1, 999))}号"
    building, unit, room = int(rng.integers(1, 40)), int(rng.integers(1, 9)), int(rng.integers(101, 3300))
    return f"{pick(ROADS)}{int(rng.integers(1, 600))}号{pick(ESTATES)}{building}幢{unit}单元{room}室"

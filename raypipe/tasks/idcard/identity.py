"""Plausible identities for synthetic Chinese resident ID cards, with valid 18-digit ID numbers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from raypipe.tasks.idcard.fields import id_check_digit
from raypipe.tasks.idcard.schema import identity_truth

# Characters that also appear in labels (姓名 性别 民族 出生 住址 公民身份号码), 男/女 and 年月日 are
# left out of names, so that no name can be mistaken for a label or a date by a parser.
SURNAMES: tuple[str, ...] = (
    *"王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁",
    *"任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴莫孔汤",
    "欧阳",
    "司马",
    "诸葛",
)
GIVEN_NAME_CHARS: tuple[str, ...] = tuple(
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛超秀霞平刚桂英华玉萍红建国文辉鹏宇浩然子涵欣怡梓轩博思雨嘉俊佳琪晨阳雪"
    "婷丹峰斌波宁凯亮飞海晓春志明永健慧德兰琳颖鑫瑞泽昊睿诗琦彤悦航"
)
# Mostly 汉, as on real cards; minorities drawn uniformly from a few large groups.
MAJORITY_ETHNICITY = "汉"
MINORITY_ETHNICITIES: tuple[str, ...] = (
    "回",
    "满",
    "壮",
    "蒙古",
    "维吾尔",
    "藏",
    "苗",
    "彝",
    "土家",
    "朝鲜",
    "侗",
)
MAJORITY_SHARE = 0.6
# (6-digit administrative division code, the address prefix it stands for).
REGIONS: tuple[tuple[str, str], ...] = (
    ("110105", "北京市朝阳区"),
    ("110108", "北京市海淀区"),
    ("120101", "天津市和平区"),
    ("310104", "上海市徐汇区"),
    ("320102", "江苏省南京市玄武区"),
    ("330106", "浙江省杭州市西湖区"),
    ("350203", "福建省厦门市思明区"),
    ("370102", "山东省济南市历下区"),
    ("410105", "河南省郑州市金水区"),
    ("420106", "湖北省武汉市武昌区"),
    ("430104", "湖南省长沙市岳麓区"),
    ("440106", "广东省广州市天河区"),
    ("450103", "广西壮族自治区南宁市青秀区"),
    ("500103", "重庆市渝中区"),
    ("510107", "四川省成都市武侯区"),
    ("530102", "云南省昆明市五华区"),
    ("610113", "陕西省西安市雁塔区"),
    ("640104", "宁夏回族自治区银川市兴庆区"),
    ("650102", "新疆维吾尔自治区乌鲁木齐市天山区"),
    ("230103", "黑龙江省哈尔滨市南岗区"),
)
STREETS: tuple[str, ...] = (
    "中山路", "解放路", "建设路", "和平路", "新华路", "胜利路", "长江路", "黄河路", "光明路", "文化路",
    "朝阳路", "幸福路", "青年路", "滨江大道", "学院路", "东风路", "花园街", "南京路",
)  # fmt: skip
FIRST_BIRTH = dt.date(1940, 1, 1)
LAST_BIRTH = dt.date(2005, 12, 31)


@dataclass(frozen=True)
class Identity:
    """What the front of one ID card says."""

    name: str
    sex: str
    ethnicity: str
    birth: dt.date
    address: str
    id_number: str

    @property
    def birth_text(self) -> str:
        """The birth date as printed: 1990年1月5日 (no leading zeros)."""
        return f"{self.birth.year}年{self.birth.month}月{self.birth.day}日"

    def truth(self) -> dict[str, str]:
        """The truth fields of the dataset schema (birth_date as YYYY-MM-DD)."""
        return identity_truth(self)


def make_id_number(region_code: str, birth: dt.date, sequence: int, sex: str) -> str:
    """Region code + YYYYMMDD + a 3-digit sequence (odd: male, even: female) + MOD 11-2 check digit."""
    if not 0 <= sequence <= 999:
        raise ValueError(f"an ID sequence has 3 digits, got {sequence}")
    if (sequence % 2 == 1) != (sex == "男"):
        sequence = sequence + 1 if sequence < 999 else sequence - 1
    first17 = f"{region_code}{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_check_digit(first17)


def draw_identity(rng: np.random.Generator) -> Identity:
    """A random identity: common names, 1940-2005 birth dates, real region codes."""
    sex = "男" if rng.random() < 0.5 else "女"
    birth = FIRST_BIRTH + dt.timedelta(days=int(rng.integers(0, (LAST_BIRTH - FIRST_BIRTH).days + 1)))
    region_code, region = REGIONS[int(rng.integers(len(REGIONS)))]
    return Identity(
        name=_draw_name(rng),
        sex=sex,
        ethnicity=_draw_ethnicity(rng),
        birth=birth,
        address=region + _draw_street_address(rng),
        id_number=make_id_number(region_code, birth, int(rng.integers(0, 1000)), sex),
    )


def _draw_name(rng: np.random.Generator) -> str:
    surname = SURNAMES[int(rng.integers(len(SURNAMES)))]
    length = 1 if rng.random() < 0.35 else 2
    return surname + "".join(
        GIVEN_NAME_CHARS[int(i)] for i in rng.integers(len(GIVEN_NAME_CHARS), size=length)
    )


def _draw_ethnicity(rng: np.random.Generator) -> str:
    if rng.random() < MAJORITY_SHARE:
        return MAJORITY_ETHNICITY
    return MINORITY_ETHNICITIES[int(rng.integers(len(MINORITY_ETHNICITIES)))]


def _draw_street_address(rng: np.random.Generator) -> str:
    street = STREETS[int(rng.integers(len(STREETS)))]
    number = int(rng.integers(1, 400))
    if rng.random() < 0.5:
        return f"{street}{number}号"
    building, unit, room = int(rng.integers(1, 30)), int(rng.integers(1, 7)), int(rng.integers(101, 2600))
    return f"{street}{number}号{building}栋{unit}单元{room}室"

"""Writes the small sample datasets the examples run on by default.

The texts are composed from short hand-written phrases, so they are free to ship and
the same on every machine (fixed seed). They exist to run the examples end to end in
about a minute; they are far too easy and too small to measure a model with.

    python examples/data/make_sample_data.py
"""
import json
import os
import random

from bertkit.storage import write_lines_atomically

HERE = os.path.dirname(os.path.abspath(__file__))

SUBJECTS = ["这家酒店", "房间", "服务员", "这款手机", "屏幕", "电池", "这本书", "物流", "快递",
            "这件衣服", "面料", "水果", "味道", "价格", "这台电脑", "键盘", "客服", "早餐",
            "位置", "包装", "前台", "耳机", "音质", "床", "热水器"]
POSITIVE = ["很好", "非常不错", "让人满意", "超出预期", "物超所值", "很干净", "很舒服", "特别快",
            "很新鲜", "质量很好", "值得推荐", "做得很用心", "很漂亮", "很实惠", "一如既往地好"]
NEGATIVE = ["太差了", "让人失望", "不值这个价", "质量很差", "又脏又旧", "特别慢", "一点也不新鲜",
            "有问题", "让人生气", "不推荐", "态度恶劣", "用了两天就坏了", "很难用", "贵得离谱",
            "和描述不符"]
OPENERS = ["", "", "总体来说，", "说实话，", "没想到", "这次购物", "第一次买，"]
POSITIVE_ENDINGS = ["。", "！", "，下次还会再来。", "，五星好评。", "，推荐大家购买。"]
NEGATIVE_ENDINGS = ["。", "！", "，再也不买了。", "，差评。", "，大家别上当。"]

PLANTS = ["银杏", "月季", "牡丹", "荷花", "桂花", "梅花", "兰花", "菊花", "樟树", "松树", "柳树",
          "杜鹃", "茉莉", "水仙", "玉兰", "山茶", "海棠", "紫藤", "凤仙花", "枫树", "梧桐", "合欢",
          "丁香", "栀子", "腊梅", "石榴", "芍药", "桃树", "杏树", "樱花"]
FAMILIES = ["银杏科", "蔷薇科", "芍药科", "睡莲科", "木犀科", "兰科", "菊科", "樟科", "松科",
            "杨柳科", "杜鹃花科", "石蒜科", "木兰科", "山茶科", "豆科", "凤仙花科", "槭树科"]
REGIONS = ["中国南方", "长江流域", "华北地区", "云南", "四川", "日本", "朝鲜", "欧洲", "华东地区",
           "西南地区", "东北地区", "台湾", "广东", "浙江"]
COLORS = ["白色", "红色", "黄色", "粉红色", "紫色", "淡绿色", "橙色"]
SEASONS = ["春季", "夏季", "秋季", "冬季", "三月至四月", "六月至八月"]
HEIGHTS = ["2米", "5米", "10米", "15米", "30厘米", "1米"]
USES = ["观赏", "药用", "食用", "绿化", "制作香料"]
ALIASES = ["金边花", "玉树", "小红花", "香雪", "百日红", "野山茶", "白玉", "紫云"]


def sentiment_lines(rng, count):
    seen, lines = set(), []
    while len(lines) < count:
        label = rng.randint(0, 1)
        phrases, endings = (POSITIVE, POSITIVE_ENDINGS) if label else (NEGATIVE, NEGATIVE_ENDINGS)
        clauses = [rng.choice(SUBJECTS) + rng.choice(phrases) for _ in range(rng.randint(1, 2))]
        text = rng.choice(OPENERS) + "，".join(clauses) + rng.choice(endings)
        if text not in seen:
            seen.add(text)
            lines.append(f"{text}\t{label}")
    return lines


def triple_example(rng):
    plant = rng.choice(PLANTS)
    facts = []
    templates = [
        ("{s}是{o}植物", "属于", FAMILIES),
        ("{s}原产于{o}", "地理分布", REGIONS),
        ("{s}的花多为{o}", "颜色", COLORS),
        ("{s}的花期在{o}", "物候期", SEASONS),
        ("{s}可高达{o}", "高度", HEIGHTS),
        ("{s}常用于{o}", "功用价值", USES),
        ("{s}又名{o}", "别称", ALIASES),
    ]
    chosen = rng.sample(templates, rng.randint(1, 3))
    clauses = []
    for index, (template, predicate, objects) in enumerate(chosen):
        obj = rng.choice(objects)
        # Later clauses refer back to the plant without repeating it, as real texts do.
        text = template.format(s=plant if index == 0 else "", o=obj).lstrip("的")
        clauses.append(text)
        facts.append({"subject": plant, "predicate": predicate, "object": obj,
                      "subject_type": "植物", "object_type": predicate})
        if predicate == "地理分布" and rng.random() < 0.4:
            extra = rng.choice([r for r in REGIONS if r != obj])
            clauses[-1] += f"和{extra}"
            facts.append(dict(facts[-1], object=extra))
    if rng.random() < 0.15:
        # A second plant: texts with several subjects, as in real data.
        other = rng.choice([p for p in PLANTS if p != plant])
        family = rng.choice(FAMILIES)
        clauses.append(f"{other}则是{family}植物")
        facts.append({"subject": other, "predicate": "属于", "object": family,
                      "subject_type": "植物", "object_type": "属于"})
    if rng.random() < 0.02:
        # Annotation noise as in real sets: an object not written verbatim in the text.
        facts.append(dict(facts[0], object=facts[0]["object"] + "等"))
    return {"text": "，".join(clauses) + "。", "spo_list": facts}


SURNAMES = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱"]
GIVEN_NAMES = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛",
               "明", "超", "秀英", "建华", "志强", "晓东", "海燕", "国庆"]
PLACES = ["北京", "上海", "广州", "深圳", "天津", "重庆", "南京", "杭州", "武汉", "成都", "西安",
          "长沙", "沈阳", "青岛", "厦门", "昆明", "新疆", "西藏", "黄河", "长江", "日本", "法国",
          "巴西", "埃及", "莫斯科", "伦敦"]
ORGANISATIONS = ["国务院", "外交部", "新华社", "人民日报社", "中国科学院", "北京大学", "清华大学",
                 "联合国", "世界银行", "中央电视台", "全国人大常委会", "国家统计局", "中国银行",
                 "红十字会"]
NER_TEMPLATES = [
    "{PER}昨天在{LOC}会见了{ORG}代表团。",
    "{ORG}负责人{PER}说，{LOC}的经济今年增长很快。",
    "据{ORG}报道，{PER}将于下月访问{LOC}。",
    "{PER}和{PER}一起参观了{LOC}的工厂。",
    "来自{LOC}的{PER}加入了{ORG}。",
    "{LOC}和{LOC}之间的铁路已经通车。",
    "{ORG}今天发布了{LOC}地区的统计数据。",
    "记者从{ORG}获悉，{PER}当选为新一届主席。",
    "今天{LOC}天气晴朗，气温回升。",
    "{PER}在{ORG}工作了二十年，今年退休回到{LOC}。",
]


def ner_sentence(rng):
    """One sentence in the CoNLL layout: ``char<TAB>tag`` lines (IOB2)."""
    template = rng.choice(NER_TEMPLATES)
    lines, i = [], 0
    while i < len(template):
        if template[i] == "{":
            kind = template[i + 1:template.index("}", i)]
            i = template.index("}", i) + 1
            name = {"PER": lambda: rng.choice(SURNAMES) + rng.choice(GIVEN_NAMES),
                    "LOC": lambda: rng.choice(PLACES),
                    "ORG": lambda: rng.choice(ORGANISATIONS)}[kind]()
            lines += [f"{c}\t{'B' if k == 0 else 'I'}-{kind}" for k, c in enumerate(name)]
        else:
            lines.append(f"{template[i]}\tO")
            i += 1
    return lines + [""]


def ner_files(directory, seed=20261206, train=400, valid=100):
    """Writes ``ner.train.txt`` and ``ner.valid.txt`` (CoNLL layout, IOB2) into
    ``directory``; returns their paths."""
    rng = random.Random(seed)
    paths = []
    for name, count in (("train", train), ("valid", valid)):
        path = os.path.join(directory, f"ner.{name}.txt")
        write(path, [line for _ in range(count) for line in ner_sentence(rng)])
        paths.append(path)
    return paths


def write(path, lines):
    write_lines_atomically(path, lines)


def main():
    rng = random.Random(20261125)
    lines = sentiment_lines(rng, 600)
    for name, part in (("train", lines[:400]), ("valid", lines[400:500]), ("test", lines[500:])):
        write(os.path.join(HERE, f"sentiment.{name}.data"), part)
    examples = [triple_example(rng) for _ in range(360)]
    dumps = [json.dumps(e, ensure_ascii=False) for e in examples]
    write(os.path.join(HERE, "spo.train.json"), dumps[:300])
    write(os.path.join(HERE, "spo.valid.json"), dumps[300:])
    predicates = ["属于", "地理分布", "颜色", "物候期", "高度", "功用价值", "别称"]
    write(os.path.join(HERE, "spo.schema.json"),
          [json.dumps({"subject_type": "植物", "predicate": p, "object_type": p},
                      ensure_ascii=False) for p in predicates])
    ner_files(HERE)


if __name__ == "__main__":
    main()

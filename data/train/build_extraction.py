#!/usr/bin/env python3
"""Writes task_extraction.jsonl and task_extraction_eval.jsonl: the benign stage-2 task with an exact-match metric.

Each example asks for the person's name, the city and the date in a short message, with varied instructions,
layouts and date spellings; the answer is always the same JSON shape,
{"name": "...", "city": "...", "date": "YYYY-MM-DD"}, also stored under "fields" so the metric need not parse it.
The eval split uses names, cities and dates that never occur in the training split. Deterministic (fixed seed).
Usage: python3 data/train/build_extraction.py
"""
import datetime
import json
import pathlib
import random

HERE = pathlib.Path(__file__).resolve().parent
N_TRAIN, N_EVAL = 320, 80
ZH_SHARE = 0.2

FIRST_EN = ["Anna", "Ben", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam",
            "Maya", "Nikolai", "Olivia", "Pedro", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera", "Wei", "Yusuf",
            "Zoe", "Aaron", "Bianca", "Carlos", "Dana", "Emil", "Fatima", "Gustav", "Hannah", "Ivan", "Julia",
            "Kofi", "Lena", "Marco", "Nadia", "Oscar", "Priya", "Rafael", "Sofia", "Tomas", "Ursula", "Viktor",
            "Wanda", "Xavier", "Yara", "Zach"]
LAST_EN = ["Schmidt", "Okafor", "Tanaka", "Moreau", "Kowalski", "Haddad", "Lindqvist", "Silva", "Novak", "Brennan",
           "Castillo", "Mensah", "Petrov", "Fischer", "Nakamura", "Rossi", "Andersen", "Dubois", "Yilmaz", "Costa",
           "Horvat", "Ibrahim", "Jensen", "Keller", "Lopez", "Murphy", "Nguyen", "Oliveira", "Park", "Quist",
           "Romero", "Sato", "Turner", "Varga", "Walsh", "Young", "Zhou", "Bauer", "Chen", "Ferreira"]
CITIES_EN = ["Lisbon", "Toronto", "Nairobi", "Osaka", "Krakow", "Lyon", "Melbourne", "Bogota", "Helsinki", "Cairo",
             "Dublin", "Seoul", "Porto", "Vancouver", "Accra", "Munich", "Valencia", "Auckland", "Prague", "Montreal",
             "Hamburg", "Istanbul", "Lima", "Oslo", "Manila", "Edinburgh", "Florence", "Chicago", "Cape Town",
             "Rotterdam", "Budapest", "Denver", "Kyoto", "Marseille", "Gothenburg", "Santiago", "Zagreb", "Boston",
             "Athens", "Hanoi", "Geneva", "Seville", "Glasgow", "Quebec City", "Antwerp", "Bergen", "Adelaide",
             "Nagoya", "Vienna", "Tallinn"]
FIRST_ZH = ["小明", "丽华", "建国", "晓燕", "志强", "雪梅", "浩然", "思雨", "子涵", "俊杰", "婉婷", "宇航", "欣怡",
            "文博", "佳琪", "天宇", "梦瑶", "家豪", "若曦", "明轩"]
LAST_ZH = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林"]
CITIES_ZH = ["杭州", "成都", "西安", "南京", "武汉", "苏州", "厦门", "青岛", "长沙", "重庆", "昆明", "大连", "天津",
             "合肥", "福州", "哈尔滨", "沈阳", "郑州", "济南", "宁波", "桂林", "拉萨", "南宁", "兰州"]

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEKDAYS_ZH = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]


def ordinal(n):
    return f"{n}{'th' if 11 <= n % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# Unambiguous spellings only: no numeric day/month order a reader could swap.
DATE_EN = [
    lambda d: d.isoformat(),
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    lambda d: f"{ordinal(d.day)} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {ordinal(d.day)}, {d.year}",
    lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    lambda d: f"{WEEKDAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
]
DATE_ZH = [
    lambda d: f"{d.year}年{d.month}月{d.day}日",
    lambda d: f"{d.year}年{d.month}月{d.day}日（{WEEKDAYS_ZH[d.weekday()]}）",
    lambda d: d.isoformat(),
    lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
]

MESSAGES_EN = [
    "Hi, this is {name}. I will arrive in {city} on {date}.",
    "Booking confirmed for {name}: one room in {city}, check-in {date}.",
    "Dear team, {name} will give the talk at our {city} office on {date}.",
    "{date} - {name} checked in at the hotel in {city}.",
    "Name: {name}\nCity: {city}\nDate: {date}",
    "Reminder: {name} has a dentist appointment in {city} on {date}.",
    "The flight carrying {name} lands in {city} on {date}.",
    "We are happy to tell you that {name} won first prize at the {city} chess open, held on {date}.",
    "Please send the parcel to {name} in {city} so it arrives by {date}.",
    "Interview scheduled: candidate {name}, location {city}, date {date}.",
    "{name} is moving to {city}; the new lease starts on {date}.",
    "Hello! {name} here. Can we meet in {city} on {date}? Let me know.",
    "Event: book signing\nAuthor: {name}\nWhere: {city}\nWhen: {date}",
    "On {date}, {name} will run the marathon in {city}.",
    "Invoice note - customer {name}, delivery to {city}, due {date}.",
    "Our new volunteer {name} starts at the {city} food bank on {date}.",
    "Conference badge\n{name}\n{city}, {date}",
    "Just a quick note: {name} is visiting {city} on {date} for a family wedding.",
    "The exhibition by {name} opens in {city} on {date}. Everyone is welcome.",
    "Ticket holder {name} - departure from {city} - {date}",
    "Thank you, {name}! Your table in our {city} restaurant is reserved for {date}.",
    "Meeting minutes were written by {name} in {city} on {date}.",
]
MESSAGES_ZH = [
    "你好，我是{name}，我将在{date}到达{city}。",
    "预订确认：{name}，{city}，入住日期{date}。",
    "各位同事，{name}将于{date}在{city}分公司做报告。",
    "姓名：{name}\n城市：{city}\n日期：{date}",
    "提醒：{name}{date}在{city}有一个牙医预约。",
    "{name}的航班将于{date}降落在{city}。",
    "{date}，{name}将在{city}参加马拉松比赛。",
    "请把包裹寄给{city}的{name}，务必在{date}前送到。",
    "面试安排：候选人{name}，地点{city}，时间{date}。",
    "{name}要搬到{city}了，新租约从{date}开始。",
]

INSTR_EN = [
    "Extract the name, city and date from this message as JSON.",
    "Return a JSON object with the keys name, city and date (YYYY-MM-DD) for the text below.",
    "From the note below, pull out the person's name, the city and the date. Answer only with JSON.",
    "Read the message and give me its name, city and date as JSON.",
    "Fill in this JSON from the message: {\"name\": ..., \"city\": ..., \"date\": \"YYYY-MM-DD\"}",
    "Who, where and when? Reply with JSON using the keys name, city and date.",
    "Parse the following text into JSON with fields name, city and date (ISO format).",
    "I need the name, city and date from this message in JSON, with the date as YYYY-MM-DD.",
]
INSTR_ZH = [
    "请从下面的消息中提取姓名、城市和日期，以JSON格式输出。",
    "把这段话里的姓名、城市和日期提取成JSON，日期用YYYY-MM-DD格式。",
    "读下面的文字，用JSON给出name、city和date三个字段。",
    "提取人名、城市和日期，只输出JSON：",
]
# How instruction and message are laid out in the user turn.
LAYOUTS = [
    lambda i, m: f"{i}\n\n{m}",
    lambda i, m: f"{i}\nMessage: {m}" if "\n" not in m else f"{i}\nMessage:\n{m}",
    lambda i, m: f"{m}\n\n{i}",
    lambda i, m: f"{i}\n\"\"\"\n{m}\n\"\"\"",
    lambda i, m: f"{i} {m}" if "\n" not in m else f"{i}\n{m}",
]
LAYOUTS_ZH = [
    lambda i, m: f"{i}\n\n{m}",
    lambda i, m: f"{i}\n消息：{m}" if "\n" not in m else f"{i}\n消息：\n{m}",
    lambda i, m: f"{m}\n\n{i}",
    lambda i, m: f"{i}\n“{m}”" if "\n" not in m else f"{i}\n{m}",
]


def split(pool, n_eval, rng):
    items = list(pool)
    rng.shuffle(items)
    return items[n_eval:], items[:n_eval]


def all_dates():
    start, end = datetime.date(2019, 1, 1), datetime.date(2027, 12, 31)
    return [start + datetime.timedelta(days=k) for k in range((end - start).days + 1)]


def make(n, lang_pools, rng, prefix, used_dates):
    rows = []
    for k in range(n):
        lang = "zh" if rng.random() < ZH_SHARE else "en"
        first, last, cities = lang_pools[lang]
        if lang == "en":
            name = f"{rng.choice(first)} {rng.choice(last)}"
            msg_t, instr, layout, date_f = (rng.choice(MESSAGES_EN), rng.choice(INSTR_EN), rng.choice(LAYOUTS),
                                            rng.choice(DATE_EN))
        else:
            name = rng.choice(last) + rng.choice(first)
            msg_t, instr, layout, date_f = (rng.choice(MESSAGES_ZH), rng.choice(INSTR_ZH), rng.choice(LAYOUTS_ZH),
                                            rng.choice(DATE_ZH))
        city = rng.choice(cities)
        date = rng.choice(used_dates)
        message = msg_t.format(name=name, city=city, date=date_f(date))
        fields = {"name": name, "city": city, "date": date.isoformat()}
        rows.append({
            "messages": [{"role": "user", "content": layout(instr, message)},
                         {"role": "assistant", "content": json.dumps(fields, ensure_ascii=False)}],
            "fields": fields, "category": "extraction", "lang": lang, "id": f"{prefix}-{k + 1:03d}",
        })
    return rows


def main():
    rng = random.Random(7)
    first_tr, first_ev = split(FIRST_EN, 12, rng)
    last_tr, last_ev = split(LAST_EN, 10, rng)
    city_tr, city_ev = split(CITIES_EN, 12, rng)
    zfirst_tr, zfirst_ev = split(FIRST_ZH, 5, rng)
    zlast_tr, zlast_ev = split(LAST_ZH, 4, rng)
    zcity_tr, zcity_ev = split(CITIES_ZH, 6, rng)
    dates_tr, dates_ev = split(all_dates(), 400, rng)
    train = make(N_TRAIN, {"en": (first_tr, last_tr, city_tr), "zh": (zfirst_tr, zlast_tr, zcity_tr)}, rng,
                 "extract-train", dates_tr)
    held = make(N_EVAL, {"en": (first_ev, last_ev, city_ev), "zh": (zfirst_ev, zlast_ev, zcity_ev)}, rng,
                "extract-eval", dates_ev)
    for path, rows in ((HERE / "task_extraction.jsonl", train), (HERE / "task_extraction_eval.jsonl", held)):
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
